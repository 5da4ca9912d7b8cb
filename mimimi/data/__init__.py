"""Data layer: index (pure), audio I/O, synthetic generator, downloader, torch Datasets."""
