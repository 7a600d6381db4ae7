"""Datasets, tokenizers and input pipelines (host numpy; no JAX)."""
from jaxmm.data.example_shape import example_shape
from jaxmm.data.mixture_stream import MIXTURE_2D
from jaxmm.data.mixture_stream import MixtureStream
from jaxmm.data.pipeline import check_features
from jaxmm.data.pipeline import class_labels
from jaxmm.data.pipeline import count_truncated
from jaxmm.data.pipeline import eval_batches
from jaxmm.data.pipeline import split_reader
from jaxmm.data.pipeline import tokenize
from jaxmm.data.pipeline import train_iterator
from jaxmm.data.pipeline import truncation_warning
from jaxmm.data.pipeline import view_ops_of
from jaxmm.data.sources import data_source
from jaxmm.data.sources import dataset_names
from jaxmm.data.sources import get_builder
from jaxmm.data.sources import resolve_data_dir
from jaxmm.data.tokenizers import get_tokenizer
