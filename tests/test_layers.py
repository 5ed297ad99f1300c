"""Shared blocks of models/layers that must behave exactly like the torch modules they stand in for."""

import pytest
import torch
from torch import nn

from aelab.models.layers import ConvDecoder, NearestUpsample, ResNetDecoder


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)  # equal bits: -0.0 and 0.0 differ, as do any two distinct floats


@pytest.mark.parametrize("in_size,out_size", [((7, 7), (14, 14)), ((14, 14), (28, 28)), ((5, 6), (15, 12)),
                                              ((4, 4), (4, 4)), ((7, 7), (10, 9)), ((3, 5), (12, 20))])
def test_nearest_upsample_gives_nn_upsample_outputs_and_gradients_bit_for_bit(in_size, out_size):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, *in_size, generator=gen)
    x[0, 0, 0, 0] = -0.0  # a negative zero in the input and in the gradient: addition order shows in its sign
    grad = torch.randn(6, 3, *out_size, generator=gen)
    grad[0, 0, :2, :2] = -0.0
    outs = []
    for layer in (NearestUpsample(out_size), nn.Upsample(size=out_size, mode="nearest")):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        y.backward(grad)
        outs.append((y.detach(), xi.grad))
    (y, g), (y_ref, g_ref) = outs
    assert y.shape == y_ref.shape and torch.equal(bits(y), bits(y_ref))
    assert torch.equal(bits(g), bits(g_ref))
    with torch.no_grad():  # the broadcast path
        assert torch.equal(bits(NearestUpsample(out_size)(x)), bits(y_ref))


def test_nearest_upsample_keeps_a_channels_last_input_as_nn_upsample_does():
    x = torch.randn(2, 4, 7, 7).to(memory_format=torch.channels_last)
    y = NearestUpsample((14, 14))(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, nn.Upsample(size=(14, 14), mode="nearest")(x))


@pytest.mark.parametrize("make", [lambda: ResNetDecoder((32, 7, 7), [32, 16, 8], [1, 1, 0], (1, 28, 28), "none"),
                                  lambda: ConvDecoder((16, 4, 4), [16, 8], (3, 64, 64))])
def test_decoders_train_as_they_did_with_nn_upsample(make):
    torch.manual_seed(0)
    ours = make()
    ref = make()
    ref.load_state_dict(ours.state_dict())
    swapped = 0
    for name, module in list(ref.net.named_children()):
        if isinstance(module, NearestUpsample):
            ref.net[int(name)] = nn.Upsample(size=module.size, mode="nearest")
            swapped += 1
    assert swapped >= 2
    in_shape = (32, 7, 7) if isinstance(ours, ResNetDecoder) else (16, 4, 4)
    z = torch.randn(5, *in_shape)
    for net in (ours, ref):
        net(z).square().mean().backward()
    with torch.no_grad():
        assert torch.equal(bits(ours(z)), bits(ref(z)))
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(bits(p.grad), bits(q.grad)), name
