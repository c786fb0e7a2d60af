"""Installation and operational qualification (``nkflow qualify``, issue #16)."""
