"""Offline dataset preparation, not used while training: the SVHN converter and the dataset checker."""
