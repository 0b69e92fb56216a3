"""Prefloop project package: settings, URLs and WSGI/ASGI wiring."""
