"""The read side: HTTP API over Redis and the live page."""
