"""Model definitions: the shared CRF layer and the two tagger networks (one per file)."""
