"""The last step of the tools that make a peer's test data: the peer's outputs of jaxmm's export
against the outputs it gave for the original weights."""
import numpy as np

U = 2.0**-24  # float32's unit roundoff
# tests/test_open_clip_import.py derives this bound of float32 rounding in sums taken in
# another order (a folded class position embedding, a dropped key bias), on unit-norm entries.
EMBEDDING_TOL = 96 * U


def assert_outputs_equal(name: str, got: dict, saved, logit_scale: float) -> None:
  """`got` and `saved` (image_embeddings, text_embeddings, logits) agree within EMBEDDING_TOL,
  the logits within logit_scale·2·√E·EMBEDDING_TOL (Cauchy-Schwarz, E the embedding size)."""
  for key, value in got.items():
    bound = EMBEDDING_TOL
    if key == "logits":
      bound = logit_scale * 2 * np.sqrt(saved["image_embeddings"].shape[1]) * EMBEDDING_TOL
    error = np.abs(value - saved[key]).max()
    print(f"{name} {key}: max |exported - original| = {error:.2e} (bound {bound:.2e})")
    assert error <= bound, (name, key, error)
