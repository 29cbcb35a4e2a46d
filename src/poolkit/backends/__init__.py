"""Backend implementations, one module per driver; imported only through their facades.

This package imports nothing: importing ``poolkit.backends`` must not pull in any driver.
"""
