"""dedupe: turn a day's scrape of news into one clean, canonical story per event."""

__version__ = "0.1.0"
