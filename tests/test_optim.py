"""The paper's SGD against its update rule by hand and against torch's SGD; the plateau schedule."""

import copy

import pytest
import torch

from alexnet.optim import PaperSGD, StepRate, plateau_schedule


def quadratic_grad(w: torch.Tensor) -> torch.Tensor:
    return 2 * w - 1.0  # gradient of sum(w² − w)


def run(optimizer_cls, lrs, **kwargs):
    """Weights after one step per entry of `lrs`, ε set to that entry before the step."""
    w = torch.tensor([0.5, -1.5, 3.0], dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_cls([w], lr=lrs[0], momentum=0.9, weight_decay=0.0005, **kwargs)
    history = []
    for lr in lrs:
        for group in optimizer.param_groups:
            group["lr"] = lr
        w.grad = quadratic_grad(w.detach())
        optimizer.step()
        history.append(w.detach().clone())
    return history


def test_update_rule_matches_the_paper_by_hand():
    lrs = [0.01, 0.01, 0.001, 0.001]
    w = torch.tensor([0.5, -1.5, 3.0], dtype=torch.float64)
    v = torch.zeros_like(w)
    expected = []
    for lr in lrs:  # §5: v ← 0.9v − 0.0005εw − ε∂L/∂w ; w ← w + v
        v = 0.9 * v - 0.0005 * lr * w - lr * quadratic_grad(w)
        w = w + v
        expected.append(w.clone())
    for got, want in zip(run(PaperSGD, lrs), expected, strict=True):
        assert torch.allclose(got, want, rtol=0, atol=1e-15)


def test_every_parameter_follows_the_rule_and_one_without_gradient_is_left_alone():
    """The multi-tensor update over parameters of several shapes equals the rule per tensor."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 3, 3), (7,)]
    weights = [torch.randn(s, generator=generator).requires_grad_() for s in shapes]
    frozen = weights.pop()  # gets no gradient
    optimizer = PaperSGD([*weights, frozen], lr=0.01)
    expected = [(w.detach().clone(), torch.zeros_like(w)) for w in weights]
    frozen_before = frozen.detach().clone()
    for _ in range(3):
        grads = [torch.randn(w.shape, generator=generator) for w in weights]
        for w, g in zip(weights, grads, strict=True):
            w.grad = g
        optimizer.step()
        for i, ((w, v), g) in enumerate(zip(expected, grads, strict=True)):
            v = 0.9 * v - 0.0005 * 0.01 * w - 0.01 * g
            expected[i] = (w + v, v)
    buffer_lr = optimizer.param_groups[0]["buffer_lr"]
    for w, (want, want_velocity) in zip(weights, expected, strict=True):
        assert torch.allclose(w.detach(), want, rtol=0, atol=1e-7)
        velocity = -buffer_lr * optimizer.state[w]["momentum_buffer"]  # v = −ε·b
        assert torch.allclose(velocity, want_velocity, rtol=0, atol=1e-8)
    assert torch.equal(frozen.detach(), frozen_before) and frozen not in optimizer.state


def test_a_weight_without_gradient_keeps_its_velocity_when_the_rate_changes():
    """At a change of ε the stepped weights' buffers are rescaled inside the fused pass; one
    left out of that step keeps v = −ε·b all the same, and its next step follows the rule."""
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    optimizer = PaperSGD([a, b], lr=0.01)
    a.grad, b.grad = torch.full((3,), 2.0), torch.full((2,), 3.0)
    optimizer.step()
    velocity_b = -0.01 * optimizer.state[b]["momentum_buffer"].clone()
    weight_b = b.detach().clone()
    optimizer.param_groups[0]["lr"] = 0.004
    b.grad = None
    optimizer.step()  # b sits this one out
    assert torch.allclose(-0.004 * optimizer.state[b]["momentum_buffer"], velocity_b, atol=1e-9)
    b.grad = torch.full((2,), 1.0)
    optimizer.step()
    expected = 0.9 * velocity_b - 0.0005 * 0.004 * weight_b - 0.004 * 1.0
    assert torch.allclose(b.detach(), weight_b + expected, rtol=0, atol=1e-7)


class _Run:
    """Two weight tensors trained by PaperSGD on seeded random gradients."""

    def __init__(self, state_dict=None, weights=None, generator_state=None):
        self.generator = torch.Generator().manual_seed(1)
        if generator_state is not None:
            self.generator.set_state(generator_state)
        start = weights or [torch.ones(4, 3), torch.ones(5)]
        self.weights = [w.clone().requires_grad_() for w in start]
        self.optimizer = PaperSGD(self.weights, lr=0.01)
        if state_dict is not None:
            self.optimizer.load_state_dict(state_dict)

    def steps(self, lrs):
        for lr in lrs:
            self.optimizer.param_groups[0]["lr"] = lr
            for w in self.weights:
                w.grad = torch.randn(w.shape, generator=self.generator)
            self.optimizer.step()
        return self

    def saved(self):
        """What a checkpoint keeps: the optimizer state, the weights, the gradient stream."""
        weights = [w.detach().clone() for w in self.weights]
        return copy.deepcopy(self.optimizer.state_dict()), weights, self.generator.get_state()


def test_a_saved_state_resumes_bit_for_bit_across_an_lr_drop():
    run = _Run().steps([0.01, 0.01])
    state, weights, generator_state = run.saved()
    straight = run.steps([0.001, 0.001]).weights
    resumed = _Run(state, weights, generator_state).steps([0.001, 0.001]).weights
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)


def test_a_state_holding_the_papers_velocity_loads_as_the_same_optimizer():
    run = _Run().steps([0.01, 0.01, 0.005])
    state, weights, generator_state = run.saved()
    straight = run.steps([0.001]).weights
    buffer_lr = state["param_groups"][0].pop("buffer_lr")
    for values in state["state"].values():  # the layout checkpoints had before: v itself
        values["velocity"] = -buffer_lr * values.pop("momentum_buffer")
    from_velocity = _Run(state, weights, generator_state).steps([0.001]).weights
    for a, b in zip(from_velocity, straight, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-7)


def test_agrees_with_torch_sgd_while_lr_is_constant():
    lrs = [0.01] * 20
    for ours, theirs in zip(run(PaperSGD, lrs), run(torch.optim.SGD, lrs), strict=True):
        assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_differs_from_torch_sgd_after_a_drop_as_the_paper_says():
    lrs = [0.01] * 10 + [0.001]
    ours, theirs = run(PaperSGD, lrs), run(torch.optim.SGD, lrs)
    before = ours[-2]
    assert torch.allclose(before, theirs[-2], rtol=1e-12)
    # Paper: the step after the drop keeps 0.9 of the old velocity; torch scales it by 0.1 too.
    ours_step, theirs_step = ours[-1] - before, theirs[-1] - before
    assert not torch.allclose(ours_step, theirs_step, rtol=1e-3)
    assert (ours_step.abs() > 5 * theirs_step.abs()).all()


def test_rejects_bad_hyper_parameters():
    with pytest.raises(ValueError, match="lr > 0"):
        PaperSGD([torch.zeros(1, requires_grad=True)], lr=0)


def schedule_for(errors, patience=1, max_drops=3):
    w = torch.zeros(1, requires_grad=True)
    optimizer = PaperSGD([w], lr=0.01)
    schedule = plateau_schedule(optimizer, drop=10.0, patience=patience, max_drops=max_drops)
    lrs = []
    for error in errors:
        schedule.step(error)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_plateau_drops_after_patience_epochs_without_improvement():
    #          better better same  worse  better same  same  better
    errors = [0.9, 0.8, 0.8, 0.85, 0.7, 0.7, 0.7, 0.6]
    lrs = schedule_for(errors, patience=1)
    expected = [0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.0001, 0.0001]
    assert lrs == pytest.approx(expected, rel=1e-9)


def test_plateau_drops_at_most_three_times():
    lrs = schedule_for([0.5] * 20, patience=0)
    assert lrs[:4] == pytest.approx([0.01, 0.001, 0.0001, 0.00001], rel=1e-9)
    assert lrs[-1] == pytest.approx(0.00001, rel=1e-9)
    assert len({round(lr, 12) for lr in lrs}) == 4  # ε₀ and three drops


def test_plateau_state_survives_a_round_trip():
    w = torch.zeros(1, requires_grad=True)
    optimizer = PaperSGD([w], lr=0.01)
    schedule = plateau_schedule(optimizer, drop=10.0, patience=2, max_drops=3)
    for error in [0.5, 0.6]:
        schedule.step(error)
    restored = plateau_schedule(PaperSGD([w], lr=0.01), drop=10.0, patience=2, max_drops=3)
    restored.load_state_dict(schedule.state_dict())
    assert restored.best == 0.5 and restored.num_bad_epochs == 1


def test_a_warm_up_follows_the_paper_rule_with_a_rising_rate():
    """StepRate sets ε·s/warmup before step s, then (no total) leaves ε to the plateau schedule;
    PaperSGD keeps v across each change, so the weights follow §5's rule with that ε, by hand
    in float64."""
    w = torch.tensor([0.5, -1.5, 3.0], dtype=torch.float64, requires_grad=True)
    optimizer = PaperSGD([w], lr=0.01, momentum=0.9, weight_decay=0.0005)
    rate = StepRate(optimizer, lr=0.01, warmup=3)
    want, v = w.detach().clone(), torch.zeros(3, dtype=torch.float64)
    for step, lr in enumerate([0.01 / 3, 0.02 / 3, 0.01, 0.01, 0.01], start=1):
        rate.before_step(step)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-15)
        w.grad = quadratic_grad(w.detach())
        optimizer.step()
        v = 0.9 * v - 0.0005 * lr * want - lr * quadratic_grad(want)
        want = want + v
        assert torch.allclose(w.detach(), want, rtol=0, atol=1e-15)
    optimizer.param_groups[0]["lr"] = 0.001  # a drop after the warm-up: not undone
    rate.before_step(6)
    assert optimizer.param_groups[0]["lr"] == 0.001


def test_the_linear_shape_falls_to_a_last_small_step():
    w = torch.zeros(1, requires_grad=True)
    optimizer = PaperSGD([w], lr=0.01)
    rate = StepRate(optimizer, lr=0.01, warmup=2, total=6)
    rates = []
    for step in range(1, 7):
        rate.before_step(step)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.005, 0.01, 0.01, 0.0075, 0.005, 0.0025], rel=1e-12)


def test_without_momentum_a_step_is_plain_gradient_descent():
    """`--set optim.momentum=0` used to end at the first step (torch's fused kernel takes no
    buffers at momentum 0): w ← w − ε·(∂L/∂w + λ·w), by hand."""
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0, 4.0]))
    optimizer = PaperSGD([weight], lr=0.1, momentum=0.0, weight_decay=0.5)
    expected = weight.detach().clone()
    for gradient in ([1.0, 1.0, -1.0], [0.5, 0.0, 2.0]):
        weight.grad = torch.tensor(gradient)
        expected -= 0.1 * (torch.tensor(gradient) + 0.5 * expected)
        optimizer.step()
    assert torch.allclose(weight.detach(), expected)
