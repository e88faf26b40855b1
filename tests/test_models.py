import pytest
import torch

from genlab.errors import GenlabError
from genlab.models import Conv4, conv4_param_count, count_params, make_model
from genlab.models.conv4 import report_layout


def test_report_parameter_counts_are_exact():
    assert count_params(Conv4(width=4, kernel=3, num_classes=10)) == 6_666
    assert count_params(Conv4(width=64, kernel=3, num_classes=10)) == 1_558_026


@pytest.mark.parametrize("width", [1, 2, 5, 16])
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_closed_form_count(width, kernel):
    assert count_params(Conv4(width, kernel, num_classes=7)) == conv4_param_count(
        width, kernel, num_classes=7
    )


@pytest.mark.parametrize("kernel", [3, 5])
def test_spatial_sizes_follow_the_report(kernel):
    model = Conv4(width=2, kernel=kernel).eval()
    x = torch.randn(2, 3, 32, 32)
    sizes = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, torch.nn.ReLU):  # the end of a block
            sizes.append(x.shape[-1])
    assert sizes == [32, 16, 8, 1]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_pooling_before_relu_is_exactly_the_report_block():
    torch.manual_seed(0)
    model = Conv4(width=3, kernel=3).double()
    reference = report_layout(model)
    x = torch.randn(8, 3, 32, 32, dtype=torch.double)
    out = model(x)
    ref = reference(x)
    assert torch.equal(out, ref)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    ref_grads = torch.autograd.grad(ref.square().sum(), list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads, strict=True))


@pytest.mark.parametrize("kernel", [2, 4, 0])
def test_even_kernel_is_refused(kernel):
    with pytest.raises(GenlabError, match="--kernel"):
        Conv4(width=4, kernel=kernel)


def test_bad_width_and_model_name():
    with pytest.raises(GenlabError, match="--width"):
        Conv4(width=0)
    with pytest.raises(GenlabError, match="valid: conv4"):
        make_model("resnet", 4, 3, 10)
