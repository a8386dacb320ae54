"""Early-stopped trials reach Optuna as PRUNED with their intermediate values (no torch, no Ray cluster)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tuning.experiment import STUDY
from tuning.search.searcher import PruneAwareOptunaSearch

SPACE = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
MAX_EPOCHS = 4


def objective(lr: float, epoch: int) -> float:
    """A cheap synthetic learning curve: best near lr=1e-2, rising with epochs."""
    return (1 - abs(__import__("math").log10(lr) + 2) / 3) * epoch / MAX_EPOCHS


def run_trial(searcher, trial_id: str, epochs: int, diverge: bool = False) -> None:
    lr = searcher.suggest(trial_id)["lr"]
    last = None
    for epoch in range(1, epochs + 1):
        last = {"epoch": epoch, "training_iteration": epoch, "test_acc": objective(lr, epoch), "diverged": False}
        searcher.on_trial_result(trial_id, last)
    if diverge:
        last = {"epoch": epochs + 1, "training_iteration": epochs + 1, "diverged": True}
        searcher.on_trial_result(trial_id, last)
    searcher.on_trial_complete(trial_id, last)


def states(searcher) -> list[TrialState]:
    return [t.state for t in searcher.study.get_trials(deepcopy=False)]


def new_searcher(cls=PruneAwareOptunaSearch, **kwargs):
    extra = {"max_epochs": MAX_EPOCHS} if cls is PruneAwareOptunaSearch else {}
    return cls(
        space=SPACE, metric="test_acc", mode="max", sampler=optuna.samplers.TPESampler(seed=0), **extra, **kwargs
    )


def test_a_trial_stopped_early_is_pruned_with_its_intermediate_values():
    searcher = new_searcher()
    run_trial(searcher, "full", MAX_EPOCHS)
    run_trial(searcher, "stopped", 1)
    full, stopped = searcher.study.get_trials()
    assert full.state == TrialState.COMPLETE and full.value == objective(full.params["lr"], MAX_EPOCHS)
    assert stopped.state == TrialState.PRUNED
    assert stopped.intermediate_values == {1: objective(stopped.params["lr"], 1)}
    assert stopped.value == stopped.intermediate_values[1]  # Optuna keeps a pruned trial's last value
    assert sorted(full.intermediate_values) == [1, 2, 3, 4]


def test_ray_stock_searcher_would_call_the_stopped_trial_complete():
    """The behaviour this project fixes: Ray's OptunaSearch tells a 1-epoch trial as COMPLETE."""
    storage = optuna.storages.InMemoryStorage()
    searcher = new_searcher(OptunaSearch, storage=storage, study_name="stock")
    run_trial(searcher, "stopped", 1)
    study = optuna.load_study(study_name="stock", storage=storage)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


def test_diverged_and_errored_trials():
    searcher = new_searcher()
    run_trial(searcher, "nan", 2, diverge=True)
    searcher.suggest("crashed")
    searcher.on_trial_complete("crashed", None, error=True)
    nan, crashed = searcher.study.get_trials()
    assert nan.state == TrialState.PRUNED and sorted(nan.intermediate_values) == [1, 2]
    assert crashed.state == TrialState.FAIL


def test_a_trial_the_journal_holds_as_finished_is_not_told_again_after_a_resume():
    """Killed after Optuna's journal recorded a trial's end but before the searcher's pickle was saved: the
    restored searcher (trial numbers, not Trial objects) hears of the trial again, here as an error."""
    searcher = new_searcher()
    run_trial(searcher, "done", MAX_EPOCHS)
    (before,) = searcher.study.get_trials()
    searcher._finished.discard("done")  # the state a resume restores: the pickle predates the tell
    searcher._trials["done"] = before.number
    searcher.on_trial_complete("done", None, error=True)  # Optuna would raise "Cannot tell a COMPLETE trial"
    (after,) = searcher.study.get_trials()
    assert after.state == TrialState.COMPLETE and after.value == before.value


def test_tpe_learns_from_pruned_trials_over_a_synthetic_search():
    """Thirty synthetic trials, ASHA-like stopping of the worse half after one epoch: TPE converges near 1e-2."""
    searcher = new_searcher()
    firsts: list[float] = []
    for i in range(30):
        trial_id = f"t{i}"
        lr = searcher.suggest(trial_id)["lr"]
        first = objective(lr, 1)
        stop = len(firsts) >= 2 and first < sorted(firsts)[len(firsts) // 2]
        firsts.append(first)
        for epoch in range(1, (1 if stop else MAX_EPOCHS) + 1):
            result = {"epoch": epoch, "test_acc": objective(lr, epoch)}
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result)
    study = searcher.study
    assert TrialState.PRUNED in states(searcher) and TrialState.COMPLETE in states(searcher)
    assert abs(__import__("math").log10(study.best_params["lr"]) + 2) < 0.5


def run_trial_as_ray_does(searcher, trial_id: str, epochs: int) -> None:
    """Ray hands every result but the last to on_trial_result, and the last to on_trial_complete only."""
    lr = searcher.suggest(trial_id)["lr"]
    results = [{"epoch": e, "training_iteration": e, "test_acc": objective(lr, e)} for e in range(1, epochs + 1)]
    for result in results[:-1]:
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, results[-1])


def test_every_epoch_reaches_the_study_once_with_its_step_including_the_last():
    searcher = new_searcher()
    run_trial_as_ray_does(searcher, "full", MAX_EPOCHS)
    run_trial_as_ray_does(searcher, "stopped", 2)
    full, stopped = searcher.study.get_trials()
    assert full.intermediate_values == {e: objective(full.params["lr"], e) for e in range(1, MAX_EPOCHS + 1)}
    assert stopped.state == TrialState.PRUNED
    assert stopped.intermediate_values == {1: objective(stopped.params["lr"], 1), 2: objective(stopped.params["lr"], 2)}


def test_the_searcher_uses_only_public_apis_of_ray_and_optuna():
    """A Ray Tune Searcher over Optuna's ask and tell: not OptunaSearch, whose private trial maps it once used."""
    from ray.tune.search import Searcher

    assert PruneAwareOptunaSearch.__mro__[1] is Searcher and not issubclass(PruneAwareOptunaSearch, OptunaSearch)
    searcher = new_searcher()
    run_trial_as_ray_does(searcher, "b", 1)
    (trial,) = searcher.study.get_trials()
    assert trial.user_attrs == {"ray_trial_id": "b"} and trial.state == TrialState.PRUNED


def test_the_seed_point_is_tried_first():
    searcher = new_searcher(points_to_evaluate=[{"lr": 0.003}])
    assert searcher.suggest("first") == {"lr": 0.003}
    assert searcher.suggest("second") != {"lr": 0.003}


def test_ray_still_keeps_a_restored_searchs_storage_where_the_generator_re_points_it():
    """RelocatingSearchGenerator's one use of Ray Tune's private state: SearchGenerator._experiment.storage."""
    import ray
    from ray.tune.experiment import Experiment

    from tuning.search.searcher import STORAGE_ATTRIBUTES, RelocatingSearchGenerator

    generator = RelocatingSearchGenerator(new_searcher())
    generator.add_configurations([Experiment("pinned", lambda config: None, storage_path="/tmp/pinned-storage")])
    storage = getattr(getattr(generator, "_experiment", None), "storage", None)
    assert storage is not None and all(hasattr(storage, a) for a in STORAGE_ATTRIBUTES), (
        f"Ray {ray.__version__} no longer keeps SearchGenerator._experiment.storage.{STORAGE_ATTRIBUTES}: "
        f"update RelocatingSearchGenerator (tuning/search/searcher.py)"
    )
    assert storage.storage_fs_path == "/tmp/pinned-storage"


def test_where_ray_moved_the_storage_a_relocated_resume_is_refused(monkeypatch, tmp_path):
    from ray.tune.search import SearchGenerator

    from tuning.search.searcher import RelocatingSearchGenerator, ResumeUnsupported, resuming_into

    generator = RelocatingSearchGenerator(new_searcher())
    monkeypatch.setattr(SearchGenerator, "set_state", lambda self, state: setattr(self, "_experiment", None))
    generator.set_state({})  # outside a resume: nothing to re-point
    with resuming_into(tmp_path), pytest.raises(ResumeUnsupported, match="--resume refused: this Ray"):
        generator.set_state({})


def test_with_two_objectives_only_trials_that_ran_to_the_end_are_complete_with_both_values():
    searcher = PruneAwareOptunaSearch(
        space=SPACE,
        metric=["test_acc", "test_synops_per_image"],
        mode=["max", "min"],
        sampler=optuna.samplers.TPESampler(seed=0),
        max_epochs=MAX_EPOCHS,
    )
    for trial_id, epochs in (("full", MAX_EPOCHS), ("stopped", 1)):
        searcher.suggest(trial_id)
        results = [
            {"epoch": e, "test_acc": 0.5 + e / 10, "test_synops_per_image": 1000.0 * e} for e in range(1, epochs + 1)
        ]
        for result in results[:-1]:
            searcher.on_trial_result(trial_id, result)  # no intermediate values: Trial.report is single-objective
        searcher.on_trial_complete(trial_id, results[-1])
    full, stopped = searcher.study.get_trials()
    assert full.state == TrialState.COMPLETE and full.values == [0.5 + MAX_EPOCHS / 10, 1000.0 * MAX_EPOCHS]
    assert stopped.state == TrialState.PRUNED  # an ASHA-stopped trial is not put on the front as if it had finished
    assert [t.number for t in searcher.study.best_trials] == [full.number]


# --- a resume after a kill that left Ray's trials and the searcher's state apart ----------------------------------


def journaled_search(folder, trials: int, max_concurrent: int = 2):
    """A search's generator, concurrency limiter and searcher, whose study is a journal in ``folder``, for ``trials``."""
    from ray.tune.experiment import Experiment
    from ray.tune.search import ConcurrencyLimiter

    from tuning.search.searcher import RelocatingSearchGenerator

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / STUDY)))
    searcher = new_searcher(points_to_evaluate=[{"lr": 0.003}], storage=storage, study_name="s")
    generator = RelocatingSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=max_concurrent))
    generator.add_configurations(
        [Experiment("journaled", lambda config: None, num_samples=trials, storage_path=str(folder))]
    )
    return generator


def tell_ray_holds(generator, trials) -> None:
    """What Ray does on a resume: it adds each restored trial, and its scheduler hears of each (through Ray's own
    TrialRunnerWrapper, the view of the controller that schedulers get)."""
    import types

    from ray.tune.execution.tune_controller import TuneController

    from tuning.search.searcher import MatchingASHAScheduler

    others = ("get_trials", "get_live_trials", "_set_trial_status", "pause_trial", "stop_trial")
    others += ("_schedule_trial_save", "_resource_updater")
    controller = types.SimpleNamespace(search_alg=generator, **dict.fromkeys(others))
    scheduler = MatchingASHAScheduler(time_attr="epoch", metric="test_acc", mode="max", max_t=MAX_EPOCHS)
    for trial in trials:
        scheduler.on_trial_add(TuneController._wrapped(controller), trial)


def resumed(tuner_pickle: bytes, state: dict, searcher_state: bytes, folder):
    """The generator a resume restores: tuner.pkl's (pickled before any trial), then the saved states set on it."""
    import ray.cloudpickle as pickle

    from tuning.search.searcher import resuming_into

    state = dict(state)
    with resuming_into(folder):
        generator = pickle.loads(tuner_pickle)
        generator.searcher.set_state(state.pop("limiter"))
        generator.set_state(state)
        generator.searcher.searcher.__setstate__(pickle.loads(searcher_state))
    return generator


def saved(generator) -> tuple[dict, bytes]:
    import ray.cloudpickle as pickle

    return dict(generator.get_state()) | {"limiter": generator.searcher.get_state()}, pickle.dumps(
        generator.searcher.searcher.__getstate__()
    )


def test_a_trial_ray_lost_in_a_kill_is_run_on_resume_with_the_configuration_it_was_asked_for(tmp_path):
    """Killed while Ray's files were being written: the generator's state counts the seed's trial and a second,
    the restored trials hold only the second. Ray's own generator would call the search finished with one trial
    (and every later resume too); here the next trial runs the seed's configuration, and the search then ends."""
    import ray.cloudpickle as pickle  # as Ray pickles tuner.pkl

    from tuning.search.searcher import resuming_into

    with resuming_into(tmp_path):
        generator = journaled_search(tmp_path, trials=2)
        tuner_pickle = pickle.dumps(generator)
        first, second = generator.next_trial(), generator.next_trial()
    assert first.config == {"lr": 0.003} and second.config != first.config
    state, searcher_state = saved(generator)  # saved with both trials; the trials' file kept only the second

    restored = resumed(tuner_pickle, state, searcher_state, tmp_path)
    with resuming_into(tmp_path):
        tell_ray_holds(restored, [second])
        assert not restored.is_finished()
        third = restored.next_trial()
        assert third is not None and third.config == {"lr": 0.003}
        assert restored.next_trial() is None and restored.is_finished()
        for trial in (second, third):
            run_trial_as_ray_does(restored.searcher.searcher, trial.trial_id, MAX_EPOCHS)
    study = restored.searcher.searcher.study
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[0].params == {"lr": 0.003} and study.trials[0].user_attrs["ray_trial_id"] == third.trial_id


def test_a_trial_ray_kept_but_the_searchers_state_missed_is_told_to_the_study(tmp_path):
    """The other order: the trials' file holds a trial the searcher's saved state had not yet asked for. Its
    Optuna trial (the journal recorded the ask) is taken back, so its end reaches the study, and no extra trial
    is made."""
    import ray.cloudpickle as pickle  # as Ray pickles tuner.pkl

    from tuning.search.searcher import resuming_into

    with resuming_into(tmp_path):
        generator = journaled_search(tmp_path, trials=2)
        tuner_pickle = pickle.dumps(generator)
        first = generator.next_trial()
        state, searcher_state = saved(generator)  # saved with one trial
        second = generator.next_trial()

    restored = resumed(tuner_pickle, state, searcher_state, tmp_path)
    with resuming_into(tmp_path):
        tell_ray_holds(restored, [first, second])
        assert restored.is_finished() and restored.next_trial() is None
        for trial in (first, second):
            run_trial_as_ray_does(restored.searcher.searcher, trial.trial_id, MAX_EPOCHS)
    assert [t.state for t in restored.searcher.searcher.study.get_trials()] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]


def test_ray_still_decides_when_a_generator_is_finished_by_its_counter(tmp_path):
    """RelocatingSearchGenerator sets SearchGenerator._counter to the trials Ray holds after a resume."""
    import ray

    generator = journaled_search(tmp_path, trials=2)
    generator._match_ray_trials()
    assert isinstance(getattr(generator, "_counter", None), int) and not generator.is_finished(), (
        f"Ray {ray.__version__} no longer keeps SearchGenerator._counter: update RelocatingSearchGenerator "
        f"(tuning/search/searcher.py)"
    )
    generator._counter = 2
    assert generator.is_finished(), f"Ray {ray.__version__}: SearchGenerator._counter no longer decides is_finished"


def test_a_restore_that_starts_afresh_still_runs_the_searchs_number_of_trials(tmp_path):
    """Ray's Tuner.restore that finds no saved trials starts the run afresh with one sample (it passes no
    num_samples); the generator keeps the search's own number (SearchGenerator._total_samples)."""
    import ray
    from ray.tune.experiment import Experiment

    from tuning.search.searcher import RelocatingSearchGenerator

    generator = RelocatingSearchGenerator(new_searcher(), num_samples=3)
    generator.add_configurations([Experiment("afresh", lambda config: None, num_samples=1, storage_path=str(tmp_path))])
    assert generator.total_samples == 3, (
        f"Ray {ray.__version__} no longer takes a generator's number of trials from SearchGenerator._total_samples: "
        f"update RelocatingSearchGenerator.add_configurations (tuning/search/searcher.py)"
    )
