"""The evaluator registry: `config.evals` by name and type, the parts an experiment lacks, `every`.

A toy experiment lends only a sampler (`Parts.sample`) that returns zeros, so
of the registry's types it supports those that sample without data:
sample_grid and two_sample.
"""
import json
import types

import ml_collections
import numpy as np
import pytest

from jaxmm import errors
from jaxmm import evaluators
from jaxmm import parallel


def _config(evals, eval_every=3):
  return ml_collections.ConfigDict(
      dict(experiment="toy", seed=0, eval_every=eval_every, evals=evals))


def _parts(config, workdir=None, nums=None):
  """A toy experiment's parts: a sampler of zeros [num, 2] that records each `num` in `nums`."""

  def sample(params, rng, labels, num, **settings):
    del params, rng, labels, settings
    if nums is not None:
      nums.append(num)
    return np.zeros((num, 2), np.float32)

  return evaluators.Parts(config=config,
                          mesh=parallel.make_mesh({"data": -1}),
                          workdir=workdir,
                          variables=lambda state: state.params,
                          sample=sample)


def _two_sample(**settings):
  return dict(type="two_sample", sampler="euler", num_steps=1, **settings)


def test_two_names_of_one_type_run_each_at_its_own_frequency(tmp_path):
  nums = []
  config = _config(dict(two_sample=_two_sample(every=2, num=4),
                        two_sample_big=_two_sample(every=None, num=8)))
  built = evaluators.build_evaluators(_parts(config, str(tmp_path), nums))
  # In the order of their names; every=None is config.eval_every.
  assert [every for every, _ in built] == [2, 3]
  state = types.SimpleNamespace(params={})
  results = [evaluate(state, 6) for _, evaluate in built]
  assert nums == [4, 8]  # each with its own settings
  assert [set(r) for r in results] == [{"two_sample/mmd2"}, {"two_sample_big/mmd2"}]
  for name, result in zip(("two_sample", "two_sample_big"), results):
    with open(tmp_path / f"{name}.json") as f:
      assert json.load(f) == {"6": result}


def test_eval_every_zero_makes_none_but_checks_every_name():
  assert evaluators.build_evaluators(_parts(_config(dict(toy=_two_sample(num=4)), 0))) == []
  with pytest.raises(errors.UserError, match="evals.toy.type='probe' is not one of"):
    evaluators.build_evaluators(_parts(_config(dict(toy=dict(type="probe")), 0)))


def test_every_zero_leaves_one_evaluator_out_but_checks_it():
  config = _config(dict(off=_two_sample(every=0, num=4), on=_two_sample(every=2, num=8)))
  built = evaluators.build_evaluators(_parts(config))
  assert [every for every, _ in built] == [2]
  nums = []
  built = evaluators.build_evaluators(_parts(config, None, nums))
  built[0][1](types.SimpleNamespace(params={}), 2)
  assert nums == [8]  # the one that runs is `on`
  config.evals.off.type = "probe"
  with pytest.raises(errors.UserError, match="evals.off.type='probe' is not one of"):
    evaluators.build_evaluators(_parts(config))


@pytest.mark.parametrize("evals,expected", [
    (dict(probe=dict(type="knn", batch_size=8)),
     "evals.probe.type='knn' is not an evaluator of experiment='toy', whose types are "
     "'sample_grid', 'two_sample'"),
    (dict(probe=dict(type="linear_probs")),
     "evals.probe.type='linear_probs' is not one of 'zero_shot', 'retrieval', 'linear_probe', "
     "'knn', 'sample_grid', 'judge', 'two_sample', 'caption', 'prompt_judge'; did you mean "
     "'linear_probe'?"),
    (dict(grid=dict(rows=2)), "evals.grid needs a type: config.evals.grid = dict(type=TYPE"),
    (dict(toy=_two_sample(num=4, every=-1)), "evals.toy.every=-1 must be an integer >= 0"),
    (dict(toy=_two_sample(num=4, batch_size=12)),
     "evals.toy.batch_size=12 does not divide over the mesh's batch axes"),
])
def test_a_bad_evaluator_is_a_user_error_naming_its_key(evals, expected):
  with pytest.raises(errors.UserError) as e:
    evaluators.build_evaluators(_parts(_config(evals)))
  assert str(e.value).startswith(expected)


def test_the_old_eval_key_says_what_it_is_now():
  config = _config({})
  config.eval = dict(knn=dict(batch_size=8))
  with pytest.raises(errors.UserError, match=r"^config.eval is now config.evals, each evaluator "
                     r"with a type: config.evals.NAME = dict\(type=TYPE"):
    evaluators.build_evaluators(_parts(config))
