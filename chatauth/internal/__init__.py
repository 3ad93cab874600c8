"""Private helpers.  Not public API: they may change without notice."""
