"""Which candidate `register` picks, on a real MLflow server: the higher validation metric; on a
tie the lower validation loss; then the earlier run. Only finished candidates of the same data
count (plus the run registering now). Runs are made by hand so every tie is exact."""

from __future__ import annotations

from typing import Any

from aepipe.tracking.registry import CANDIDATE_TAG, TIE_BREAK, candidates, selection_note


def test_ties_go_to_the_lower_validation_loss_then_the_earlier_run(tracking_env: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_env)
    exp = client.create_experiment("selection-ties")

    def run(
        name: str, start: int, acc: float, loss: float | None, data: str = "h", finish: bool = True
    ) -> str:
        r = client.create_run(
            exp, start_time=start, run_name=name, tags={"aepipe.data_hash": data, CANDIDATE_TAG: f"m-{name}"}
        )
        client.log_metric(r.info.run_id, "val_accuracy", acc)
        if loss is not None:
            client.log_metric(r.info.run_id, TIE_BREAK, loss)
        if finish:
            client.set_terminated(r.info.run_id)
        return str(r.info.run_id)

    ids: dict[str, Any] = {
        "a": run("a", 1000, 0.90, 0.30),  # tied, higher loss
        "b": run("b", 2000, 0.90, 0.20),  # tied, lowest loss, earlier of two
        "c": run("c", 3000, 0.90, 0.20),  # tied with b on both: later
        "d": run("d", 500, 0.80, 0.10),  # lower metric, whatever its loss
        "e": run("e", 4000, 0.95, None),  # no loss recorded: loses every loss tie, wins on metric here
        "other": run("other", 100, 0.99, 0.01, data="other"),  # other data: never a candidate
        "running": run("running", 100, 0.99, 0.01, finish=False),  # unfinished: not a candidate ...
    }
    order = [c.run_id for c in candidates(client, exp, "h", "val_accuracy")]
    assert order == [ids[k] for k in ("e", "b", "c", "a", "d")]

    # ... unless it is the run registering now
    pool = candidates(client, exp, "h", "val_accuracy", include_run=ids["running"])
    assert pool[0].run_id == ids["running"]

    tied = [c for c in candidates(client, exp, "h", "val_accuracy") if c.metric == 0.90]
    assert [c.run_id for c in tied] == [ids["b"], ids["c"], ids["a"]]
    # the notes name the rule that decided
    assert selection_note(tied, "val_accuracy", None) == (
        "3 candidates tie on val_accuracy 0.9000; the tie goes to the earlier run (equal validation "
        "loss, or none recorded)"
    )
    by_loss = [tied[0], tied[2]]  # b against a
    assert selection_note(by_loss, "val_accuracy", None) == (
        "2 candidates tie on val_accuracy 0.9000; the tie goes to the lower validation loss "
        "(0.20000 vs 0.30000)"
    )
    e_first = candidates(client, exp, "h", "val_accuracy")
    assert selection_note(e_first, "val_accuracy", None) == (
        "best val_accuracy 0.9500 of 5 candidate(s); next best 0.9000"
    )
