"""rethink: the library behind the reproduction book (data, augment, models, train, results)."""
__version__ = "0.1.0"
