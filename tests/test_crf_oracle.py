"""The CRF against brute-force enumeration of every tag sequence on tiny inputs (after pytorch-crf)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from medner_udf.models.crf import CRF
from medner_udf.text.scheme import allowed_transitions, tag_set, tags_to_token_spans

NUM_TAGS = 5
SEQ_LEN = 3


def _crf(
    seed: int, allowed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, n: int = NUM_TAGS
) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(n, allowed)
    with torch.no_grad():  # larger than the default init, so sequences differ clearly in score
        crf.transitions.normal_(0, 1)
        crf.start_transitions.normal_(0, 1)
        crf.end_transitions.normal_(0, 1)
    return crf


def _path_score(crf: CRF, emissions: torch.Tensor, path: tuple[int, ...]) -> float:
    """Score of one path on one unpadded sequence, straight from the definition."""
    return float(_path_score_t(crf, emissions, path).detach())


def _all_scores(crf: CRF, emissions: torch.Tensor) -> dict[tuple[int, ...], float]:
    n = emissions.shape[1]
    return {p: _path_score(crf, emissions, p) for p in itertools.product(range(n), repeat=emissions.shape[0])}


def _batch(seed: int, lengths: list[int], n: int = NUM_TAGS) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(len(lengths), max(lengths), n, generator=gen)
    mask = torch.tensor([[t < length for t in range(max(lengths))] for length in lengths])
    return emissions, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crf_log_likelihood_matches_brute_force(seed: int) -> None:
    crf = _crf(seed)
    lengths = [SEQ_LEN, 2, 1]
    emissions, mask = _batch(seed, lengths)
    gen = torch.Generator().manual_seed(seed + 100)
    tags = torch.randint(0, NUM_TAGS, (len(lengths), SEQ_LEN), generator=gen)
    llh = crf(emissions, tags, mask, reduction="none")
    for b, length in enumerate(lengths):
        scores = _all_scores(crf, emissions[b, :length])
        log_z = math.log(sum(math.exp(s) for s in scores.values()))
        gold = tuple(int(t) for t in tags[b, :length])
        assert llh[b].item() == pytest.approx(scores[gold] - log_z, abs=1e-4)


def test_crf_likelihoods_sum_to_one() -> None:
    crf = _crf(3)
    emissions, mask = _batch(3, [SEQ_LEN])
    total = 0.0
    for path in itertools.product(range(NUM_TAGS), repeat=SEQ_LEN):
        tags = torch.tensor([path])
        total += math.exp(crf(emissions, tags, mask, reduction="sum").item())
    assert total == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_crf_viterbi_matches_brute_force(seed: int) -> None:
    crf = _crf(seed)
    lengths = [SEQ_LEN, 1, 2]
    emissions, mask = _batch(seed, lengths)
    paths = crf.decode(emissions, mask)
    for b, length in enumerate(lengths):
        scores = _all_scores(crf, emissions[b, :length])
        best = max(scores, key=lambda p: scores[p])
        assert tuple(paths[b]) == best


@pytest.mark.parametrize("seed", [0, 1])
def test_crf_marginals_match_brute_force(seed: int) -> None:
    crf = _crf(seed)
    lengths = [SEQ_LEN, 2]
    emissions, mask = _batch(seed, lengths)
    marginals = crf.marginals(emissions, mask)
    for b, length in enumerate(lengths):
        scores = _all_scores(crf, emissions[b, :length])
        z = sum(math.exp(s) for s in scores.values())
        expected = np.zeros((length, NUM_TAGS))
        for path, s in scores.items():
            for t, tag in enumerate(path):
                expected[t, tag] += math.exp(s) / z
        np.testing.assert_allclose(marginals[b, :length].numpy(), expected, atol=1e-5)
        assert torch.all(marginals[b, length:] == 0)


def test_crf_segment_probability_matches_brute_force() -> None:
    crf = _crf(7)
    emissions, mask = _batch(7, [SEQ_LEN])
    path = crf.decode(emissions, mask)[0]
    segments = [(0, 1), (1, 3), (0, 3)]
    probs = crf.segment_probabilities(emissions, mask, [path], [segments])[0]
    scores = _all_scores(crf, emissions[0])
    z = sum(math.exp(s) for s in scores.values())
    for (first, last), p in zip(segments, probs, strict=True):
        expected = sum(math.exp(s) for q, s in scores.items() if q[first:last] == tuple(path[first:last])) / z
        assert p == pytest.approx(expected, abs=1e-5)


def _bioes_crf(seed: int) -> tuple[CRF, list[str]]:
    tags = tag_set(["A", "B"])  # O + 8 tags
    return _crf(seed, allowed_transitions(tags), n=len(tags)), tags


@pytest.mark.parametrize("seed", range(5))
def test_crf_constraints_viterbi_never_decodes_invalid_sequence(seed: int) -> None:
    crf, tags = _bioes_crf(seed)
    # Emissions that push hard towards invalid tags (I-/E- first, B- last).
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(4, 5, len(tags), generator=gen) * 5
    mask = torch.ones(4, 5, dtype=torch.bool)
    start_ok, trans_ok, end_ok = allowed_transitions(tags)
    for path in crf.decode(emissions, mask):
        assert start_ok[path[0]] and end_ok[path[-1]]
        assert all(trans_ok[a, b] for a, b in itertools.pairwise(path))
        # A valid BIOES path reads back as spans that re-encode to the same tags.
        names = [tags[t] for t in path]
        for first, last, label in tags_to_token_spans(names):
            if last - first == 1:
                assert names[first] == f"S-{label}"
            else:
                assert names[first] == f"B-{label}" and names[last - 1] == f"E-{label}"


def test_crf_constraints_give_invalid_sequences_zero_probability() -> None:
    crf, tags = _bioes_crf(11)
    emissions = torch.randn(1, 2, len(tags), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 2, dtype=torch.bool)
    invalid = torch.tensor([[tags.index("O"), tags.index("I-A")]])
    valid = torch.tensor([[tags.index("B-A"), tags.index("E-A")]])
    assert math.exp(crf(emissions, invalid, mask).item()) == pytest.approx(0.0, abs=1e-12)
    assert math.exp(crf(emissions, valid, mask).item()) > 1e-6
    marginals = crf.marginals(emissions, mask)[0]
    assert marginals[0, tags.index("I-A")].item() == pytest.approx(0.0, abs=1e-12)
    assert marginals[0, tags.index("E-A")].item() == pytest.approx(0.0, abs=1e-12)


def test_crf_rejects_bad_shapes_and_masks() -> None:
    crf = CRF(NUM_TAGS)
    with pytest.raises(ValueError, match="emissions must have shape"):
        crf.decode(torch.zeros(1, 2, NUM_TAGS + 1), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="first timestep"):
        crf.decode(torch.zeros(1, 2, NUM_TAGS), torch.tensor([[False, True]]))
    with pytest.raises(ValueError, match="num_tags must be positive"):
        CRF(0)
    with pytest.raises(ValueError, match="transition mask"):
        CRF(3, (np.ones(3, bool), np.ones((2, 2), bool), np.ones(3, bool)))


def test_crf_gradients_finite_with_constraints() -> None:
    crf, tags = _bioes_crf(0)
    emissions = torch.randn(2, 4, len(tags), requires_grad=True)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    gold = torch.zeros(2, 4, dtype=torch.long)
    loss = -crf(emissions, gold, mask)
    loss.backward()
    assert emissions.grad is not None and torch.isfinite(emissions.grad).all()
    assert crf.transitions.grad is not None and torch.isfinite(crf.transitions.grad).all()


@pytest.mark.parametrize("seed", range(4))
def test_crf_constrained_viterbi_matches_brute_force(seed: int) -> None:
    # The sparse (bucketed) Viterbi step must find the same best path as enumeration.
    tags = tag_set(["A"])  # O, B-A, I-A, E-A, S-A
    crf = _crf(seed, allowed_transitions(tags), n=len(tags))
    lengths = [SEQ_LEN, 2, 1]
    emissions, mask = _batch(seed, lengths, n=len(tags))
    paths = crf.decode(emissions, mask)
    for b, length in enumerate(lengths):
        scores = _all_scores(crf, emissions[b, :length])
        assert tuple(paths[b]) == max(scores, key=lambda p: scores[p])


def _brute_log_z(crf: CRF, emissions: torch.Tensor) -> torch.Tensor:
    """log Z of one unpadded sequence by enumeration, differentiable (autograd reference)."""
    start = crf.start_transitions + crf.start_penalty
    trans = crf.transitions + crf.transition_penalty
    end = crf.end_transitions + crf.end_penalty
    scores = []
    for path in itertools.product(range(emissions.shape[1]), repeat=emissions.shape[0]):
        s = start[path[0]] + emissions[0, path[0]]
        for t in range(1, len(path)):
            s = s + trans[path[t - 1], path[t]] + emissions[t, path[t]]
        scores.append(s + end[path[-1]])
    return torch.logsumexp(torch.stack(scores), dim=0)


@pytest.mark.parametrize("constrained", [False, True])
def test_crf_closed_form_gradients_match_autograd_of_brute_force(constrained: bool) -> None:
    """The likelihood's hand-written backward (marginals) equals autograd through enumeration,
    for emissions and all three transition tables, with padding in the batch."""
    allowed = None
    n = NUM_TAGS
    if constrained:
        tags = tag_set(["A", "B"])  # O + 4 x 2 BIOES tags = 9
        allowed = allowed_transitions(tags)
        n = len(tags)
    lengths = [SEQ_LEN, 2, 1]
    emissions, mask = _batch(7, lengths, n)
    gen = torch.Generator().manual_seed(8)
    gold = torch.randint(0, n, (len(lengths), SEQ_LEN), generator=gen)
    weights = torch.tensor([1.0, -0.5, 2.0])  # a non-uniform upstream gradient per sequence

    crf = _crf(5, allowed, n)
    em = emissions.clone().requires_grad_(True)
    (crf(em, gold, mask, reduction="none") * weights).sum().backward()
    got = [em.grad, crf.start_transitions.grad, crf.transitions.grad, crf.end_transitions.grad]

    ref_crf = _crf(5, allowed, n)
    ref_em = emissions.clone().requires_grad_(True)
    total = torch.zeros(())
    for b, length in enumerate(lengths):
        path = [int(x) for x in gold[b, :length]]
        start = ref_crf.start_transitions + ref_crf.start_penalty
        trans = ref_crf.transitions + ref_crf.transition_penalty
        end = ref_crf.end_transitions + ref_crf.end_penalty
        score = start[path[0]] + ref_em[b, 0, path[0]] + end[path[-1]]
        for t in range(1, length):
            score = score + trans[path[t - 1], path[t]] + ref_em[b, t, path[t]]
        total = total + weights[b] * (score - _brute_log_z(ref_crf, ref_em[b, :length]))
    total.backward()
    want = [
        ref_em.grad,
        ref_crf.start_transitions.grad,
        ref_crf.transitions.grad,
        ref_crf.end_transitions.grad,
    ]
    for g, w in zip(got, want, strict=True):
        assert g is not None and w is not None
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_crf_likelihood_is_fp32_inside_a_bf16_autocast_region() -> None:
    """Mixed-precision training wraps the whole forward pass in autocast; the CRF's recursions
    must still run in fp32 (bf16 matmuls there would cost the likelihood ~2 significant digits)."""
    tags = tag_set([f"T{i}" for i in range(10)])  # 41 tags, long-ish sequences
    crf = _crf(11, allowed_transitions(tags), len(tags))
    emissions, mask = _batch(12, [40, 25], len(tags))
    gold = torch.zeros((2, 40), dtype=torch.long)
    want = crf(emissions * 3, gold, mask, reduction="none")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = crf(emissions * 3, gold, mask, reduction="none")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("confidence", [0.5, 3.0, 10.0])
def test_crf_pruned_viterbi_equals_the_dense_one_on_a_real_tag_set(confidence: float) -> None:
    # 41 types as in MACCROBAT (165 BIOES tags); trained-looking transitions. The more confident
    # the emissions, the fewer sources survive pruning; the answer must not change.
    tags = tag_set([f"T{i:02d}" for i in range(41)])
    crf = CRF(len(tags), allowed_transitions(tags))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        crf.transitions.copy_(torch.randn(len(tags), len(tags), generator=gen) * 2)
    lengths = [1, 2, 17, 64, 40]
    emissions = torch.randn(len(lengths), max(lengths), len(tags), generator=gen) * confidence
    mask = torch.tensor([[t < n for t in range(max(lengths))] for n in lengths])
    pruned, n1 = crf.viterbi(emissions, mask, prune=True)
    dense, n2 = crf.viterbi(emissions, mask, prune=False)
    assert n1.tolist() == n2.tolist() == lengths
    np.testing.assert_array_equal(pruned, dense)
    assert crf.decode(emissions, mask) == [dense[b, :n].tolist() for b, n in enumerate(lengths)]
    for b, n in enumerate(lengths):
        spans = tags_to_token_spans([tags[t] for t in dense[b, :n]])
        assert sum(last - first for first, last, _ in spans) <= n  # a readable BIOES sequence


def test_crf_pruning_engages_on_confident_emissions() -> None:
    import medner_udf.models.crf as crf_module

    tags = tag_set([f"T{i:02d}" for i in range(41)])
    crf = CRF(len(tags), allowed_transitions(tags))
    emissions = torch.randn(4, 30, len(tags), generator=torch.Generator().manual_seed(3)) * 10
    mask = torch.ones(4, 30, dtype=torch.bool)
    calls: list[int] = []
    original = torch.Tensor.topk

    def counting_topk(self: torch.Tensor, *args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    torch.Tensor.topk = counting_topk  # type: ignore[method-assign,assignment]
    try:
        crf_module.CRF.viterbi(crf, emissions, mask, prune=True)
    finally:
        torch.Tensor.topk = original  # type: ignore[method-assign]
    assert len(calls) >= 20  # most of the 29 steps took the pruned branch


@pytest.mark.parametrize("head", ["crf", "softmax"])
def test_decode_mentions_equals_the_per_row_reading(head: str) -> None:
    # decode_mentions reads all rows at once; it must say what decode + tags_to_token_spans +
    # segment_scores say row by row, for valid CRF paths and for a softmax head's invalid ones.
    from medner_udf.models.base import TaggingNetwork

    tags = tag_set(["Age", "Dose", "Sign"])
    net = TaggingNetwork(tags, head)
    net.build_head()
    gen = torch.Generator().manual_seed(11)
    if net.crf is not None:
        with torch.no_grad():
            net.crf.transitions.copy_(torch.randn(len(tags), len(tags), generator=gen))
    lengths = [0, 1, 5, 30, 12]
    for trial in range(20):
        emissions = torch.randn(len(lengths), max(lengths), len(tags), generator=gen) * (1 + trial % 4)
        mask = torch.tensor([[t < n for t in range(max(lengths))] for n in lengths])
        mask[0, 0] = True  # the CRF needs every first step on; row 0 is a one-step row here
        got = net.decode_mentions(emissions, mask)
        paths = net.decode(emissions, mask)
        spans = [tags_to_token_spans([tags[t] for t in p]) for p in paths]
        scores = net.segment_scores(emissions, mask, paths, [[(f, e) for f, e, _ in row] for row in spans])
        want = [(b, f, e - 1, lab) for b, row in enumerate(spans) for f, e, lab in row]
        assert (
            list(zip(got.row.tolist(), got.first.tolist(), got.last.tolist(), got.types, strict=True)) == want
        )
        np.testing.assert_allclose(got.score, [s for row in scores for s in row], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("confidence", [0.5, 5.0])
def test_crf_cpu_recursions_equal_the_torch_ones_on_a_real_tag_set(confidence: float) -> None:
    tags = tag_set([f"T{i:02d}" for i in range(41)])
    crf = CRF(len(tags), allowed_transitions(tags))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        crf.transitions.copy_(torch.randn(len(tags), len(tags), generator=gen))
        crf.start_transitions.copy_(torch.randn(len(tags), generator=gen))
        crf.end_transitions.copy_(torch.randn(len(tags), generator=gen))
    lengths = [3, 1, 70, 25]
    emissions = torch.randn(len(lengths), max(lengths), len(tags), generator=gen) * confidence
    mask = torch.tensor([[t < n for t in range(max(lengths))] for n in lengths])
    numpy_paths, _ = crf.viterbi(emissions, mask)  # the CPU default: crf_cpu
    torch_paths, _ = crf.viterbi(emissions, mask, prune=False)
    np.testing.assert_array_equal(numpy_paths, torch_paths)
    fast = crf.forward_backward(emissions, mask)
    reference = crf.forward_backward(emissions, mask, on_cpu=False)
    for got, want in zip(fast, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("constrained", [False, True])
def test_crf_soft_cross_entropy_matches_brute_force_with_its_gradients(constrained: bool) -> None:
    # -sum_y q(y) log p(y) over every tag path, q the teacher CRF's distribution and p the student's.
    from medner_udf.training.objectives import crf_soft_cross_entropy

    tags = tag_set(["X"])  # O, B-X, I-X, E-X, S-X
    allowed = allowed_transitions(tags) if constrained else None
    student, teacher = _crf(0, allowed), _crf(1, allowed)
    lengths = [SEQ_LEN, 2]
    student_emissions, mask = _batch(0, lengths)
    teacher_emissions, _ = _batch(1, lengths)
    student_emissions.requires_grad_(True)
    got = crf_soft_cross_entropy(student, student_emissions, teacher, teacher_emissions, mask)
    got.backward()
    want_total = torch.zeros(())
    for b, n in enumerate(lengths):
        paths = list(itertools.product(range(NUM_TAGS), repeat=n))
        s_scores = torch.stack([_path_score_t(student, student_emissions[b, :n], p) for p in paths])
        t_scores = torch.tensor([_path_score(teacher, teacher_emissions[b, :n], p) for p in paths])
        q = torch.softmax(t_scores, dim=0)
        want_total = want_total - (q * torch.log_softmax(s_scores, dim=0)).sum()
    want = want_total / len(lengths)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    grads = [student_emissions.grad, student.transitions.grad, student.start_transitions.grad]
    student_emissions.grad, student.transitions.grad, student.start_transitions.grad = None, None, None
    want.backward()
    for g, w in zip(
        grads, [student_emissions.grad, student.transitions.grad, student.start_transitions.grad], strict=True
    ):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def _path_score_t(crf: CRF, emissions: torch.Tensor, path: tuple[int, ...]) -> torch.Tensor:
    """The score of one path on one unpadded sequence, from the definition (differentiable)."""
    start = crf.start_transitions + crf.start_penalty
    trans = crf.transitions + crf.transition_penalty
    end = crf.end_transitions + crf.end_penalty
    s = start[path[0]] + emissions[0, path[0]]
    for t in range(1, len(path)):
        s = s + trans[path[t - 1], path[t]] + emissions[t, path[t]]
    return s + end[path[-1]]
