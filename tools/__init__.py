"""Project tools that are not part of the package (``make mutation``)."""
