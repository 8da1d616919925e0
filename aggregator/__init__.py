"""aggregator: many news feeds in, one clean deduplicated Latest feed out."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/aggregator-news/aggregator"
