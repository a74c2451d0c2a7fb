"""One-step-off rollouts (rollout.one_step_off): the batch of step k+1 is generated while step k
trains, with the weights from before step k's update; truncated importance sampling corrects
the lag (its by-hand tests: test_rollout_correction.py); checkpoints record the sampler as of the trained batches."""
import json

import pytest


@pytest.mark.integration
def test_one_step_off_run_trains_on_the_previous_weights_batch(tiny_model_dir, tmp_path, ray_session):
    from test_integration import SYNC_OK, read_metrics, tiny_config

    from parkrl.controller import train
    from parkrl.data import TaskPrompts
    from parkrl.runs import checkpoint

    cfg = tiny_config(tiny_model_dir, str(tmp_path / "run"), rollout__one_step_off=True, trainer__total_steps=4,
                      trainer__eval_every=2, trainer__save_every=2, trainer__save_final=False)
    rows = read_metrics(train(cfg))
    steps = [r for r in rows if r["step"] > 0]
    assert [r["rollout/policy_lag"] for r in steps] == [0.0, 1.0, 1.0, 1.0]
    # Step 1 trains on its own fresh batch: the learner's policy is the one that generated it.
    assert steps[0]["rollout/logprob_diff"] < SYNC_OK
    assert steps[0]["rollout/is_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    for r in steps[1:]:
        # Later batches were generated before the previous update (lr 1e-3 moves this tiny model
        # a lot), and the importance weights differ from 1 to correct for it.
        assert r["rollout/logprob_diff"] > 20 * SYNC_OK
        assert abs(r["rollout/is_weight_mean"] - 1.0) > 1e-3
        assert "timing/ahead_generate_s" in r and "timing/generate_s" not in r  # generated during the step before
    # Every step but the last started the next batch and waited for it before its sync.
    assert ["timing/generate_wait_s" in r for r in steps] == [True, True, True, False]
    assert "eval/accuracy" in rows[-1]  # eval after a sync that waited for the batch ahead
    # The checkpoint after step 2 records the sampler after 2 batches, not after the one drawn ahead,
    # so a resume draws that batch's prompts again.
    data = TaskPrompts(cfg.data, shuffle_seed=cfg.trainer.seed)
    for _ in range(2):
        data.next_prompts(cfg.trainer.prompts_per_step)
    step2 = [p for p in checkpoint.complete_checkpoints(tmp_path / "run") if p.name.endswith("_2") or p.name.endswith("02")]
    saved = checkpoint.read_state(step2[0])
    assert json.dumps(saved["data"], sort_keys=True, default=str) == json.dumps(data.state_dict(), sort_keys=True,
                                                                             default=str)
