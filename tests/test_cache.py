"""The context cache keeps cond and uncond apart however ComfyUI batches them."""
import torch

from rhymeflow_core.cache import ContextCache


def test_rebatched_conds_are_gathered_by_uuid():
    cache = ContextCache("gpu")
    cache.choose_device(torch.device("cpu"), 0)
    cond, uncond = torch.full((1, 4, 2), 1.0), torch.full((1, 4, 2), 2.0)
    cache.store(("c", "u"), 0, (torch.cat([cond, uncond]),))       # recorded batched
    (alone,) = cache.load(("u",), 0, torch.device("cpu"))          # read one by one
    assert torch.equal(alone, uncond)
    (swapped,) = cache.load(("u", "c"), 0, torch.device("cpu"))
    assert torch.equal(swapped, torch.cat([uncond, cond]))
    cache.clear()
    assert cache.nbytes() == 0
