"""Datasets with stable record ids, unlearning requests, and loaders."""

from oblivio.data.dataset import Dataset, RequestError, Split
from oblivio.data.requests import Change, Relabel, Remove, Replace, ReplaceFeatures, Request

__all__ = [
    "Change",
    "Dataset",
    "Relabel",
    "Remove",
    "Replace",
    "ReplaceFeatures",
    "Request",
    "RequestError",
    "Split",
]
