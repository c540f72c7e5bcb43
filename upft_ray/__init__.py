"""upft-ray."""
