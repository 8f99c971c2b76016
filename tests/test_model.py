import pytest
import torch

from irem.models.paper import IREM, FourierFeatures, for_inference


def test_architecture_matches_the_paper() -> None:
    m = IREM(fourier_dim=256, width=256, depth=18)
    linears = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    norms = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm1d)]
    assert len(linears) == 18
    assert len(norms) == 17
    ins = [lin.in_features for lin in linears]
    assert ins[0] == 256 and ins[6] == 256 + 256 and ins[12] == 256 + 256  # layers 1, 7, 13
    assert all(i == 256 for j, i in enumerate(ins) if j not in (0, 6, 12))
    assert [lin.out_features for lin in linears][-1] == 1
    assert m.encoding.B.shape == (128, 3)


@pytest.mark.parametrize("fourier_dim", [32, 512])
def test_in_features_follow_2L(fourier_dim: int) -> None:
    m = IREM(fourier_dim=fourier_dim, width=64)
    ins = [x.in_features for x in m.modules() if isinstance(x, torch.nn.Linear)]
    assert (ins[0], ins[6], ins[12]) == (fourier_dim, fourier_dim + 64, fourier_dim + 64)


def test_fourier_matrix_is_seeded_gaussian() -> None:
    a, b, c = (
        FourierFeatures(4096, 2.0, seed=1),
        FourierFeatures(4096, 2.0, seed=1),
        FourierFeatures(4096, 2.0, seed=2),
    )
    assert torch.equal(a.B, b.B) and not torch.equal(a.B, c.B)
    assert a.B.mean().abs() < 0.1 and a.B.std() == pytest.approx(2.0, rel=0.05)
    p = torch.rand(5, 3)
    enc = a(p)
    assert enc.shape == (5, 4096)
    torch.testing.assert_close(enc[:, :2048] ** 2 + enc[:, 2048:] ** 2, torch.ones(5, 2048))


def test_output_shape_and_seeded_weights() -> None:
    p = torch.rand(7, 3)
    m1, m2 = IREM(width=32, seed=5).eval(), IREM(width=32, seed=5).eval()
    assert m1(p).shape == (7,)
    torch.testing.assert_close(m1(p), m2(p), rtol=0, atol=0)


def test_folded_batchnorm_is_the_same_function() -> None:
    m = IREM(fourier_dim=32, width=32, depth=8, skips=(3, 6), seed=2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # non-trivial running statistics and affine BatchNorm parameters
        x = torch.rand(256, 3, generator=gen) * 2 - 1
        loss = torch.mean((m(x) - x[:, 0] ** 2) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    folded = for_inference(m)
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in folded.modules())
    x = torch.rand(1000, 3, generator=gen) * 2 - 1
    with torch.no_grad():
        ref, out = m(x), folded(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert m.training is False and next(m.parameters()).requires_grad  # the model is untouched


def test_folding_leaves_the_global_random_state_alone() -> None:
    m = IREM(fourier_dim=16, width=16, depth=4, skips=(2,)).eval()
    state = torch.random.get_rng_state()
    for_inference(m)
    assert torch.equal(torch.random.get_rng_state(), state)
