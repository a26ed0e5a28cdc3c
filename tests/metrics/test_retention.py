"""Object contrast retention and visibility-split recall on hand-made scenes with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusionlab.errors import DataError
from fusionlab.metrics.retention import KEEP_THRESHOLD, MIN_SOURCE_CONTRAST, ContrastRetention, object_contrasts
from fusionlab.metrics.visibility import group_of, match_targets, split_recall

BG = 100.0
IR_ONLY, VIS_ONLY = {"ir": True, "vi": False}, {"ir": False, "vi": True}
BOTH = {"ir": True, "vi": True}


def hand_made_scene():
    """Gray 0..255 IR and VIS on a flat background: a warm pedestrian (IR-only, a disc-ish blob),
    a sign (VIS-only) and a car both see, with a mask whose ids follow the label rows."""
    H, W = 64, 80
    ir, vi = torch.full((H, W), BG, dtype=torch.float64), torch.full((H, W), BG, dtype=torch.float64)
    inst = torch.zeros(H, W, dtype=torch.int32)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    person = ((yy - 20) / 9.0) ** 2 + ((xx - 15) / 4.0) ** 2 <= 1  # not a rectangle: the mask matters
    inst[person], ir[person] = 1, 200.0
    inst[40:50, 30:40], vi[40:50, 30:40] = 2, 30.0
    inst[10:22, 55:70] = 3
    ir[10:22, 55:70], vi[10:22, 55:70] = 180.0, 40.0  # IR contrast 80, VIS contrast 60
    boxes = [[6.0, 11.0, 24.0, 30.0], [30.0, 40.0, 40.0, 50.0], [55.0, 10.0, 70.0, 22.0]]  # x1 y1 x2 y2 px
    return ir, vi, inst, boxes, [IR_ONLY, VIS_ONLY, BOTH]


def batch_boxes(boxes, H, W, index=0):
    """Boxes in the collate format: (batch_index, class, cx, cy, w, h) normalised."""
    b = torch.tensor(boxes, dtype=torch.float64)
    return torch.stack([torch.full((len(b),), float(index)), torch.zeros(len(b)), (b[:, 0] + b[:, 2]) / 2 / W,
                        (b[:, 1] + b[:, 3]) / 2 / H, (b[:, 2] - b[:, 0]) / W, (b[:, 3] - b[:, 1]) / H], 1)


def retention(fused, ir, vi, **kw):
    m = ContrastRetention()
    m.update(fused[None], ir[None], vi[None], **kw)
    return m.compute()


def test_fused_equal_to_ir_keeps_ir_only_and_drops_vis_only():
    ir, vi, inst, _, seen = hand_made_scene()
    out = retention(ir, ir, vi, instances=inst[None], visibility=[seen])
    assert out["retention/ir_only/mean"] == 1.0 and out["retention/ir_only/kept"] == 1.0
    assert out["retention/vis_only/mean"] == 0.0 and out["retention/vis_only/kept"] == 0.0
    assert out["retention/both/mean"] == 1.0  # IR holds the larger of the two contrasts
    assert out["retention/all/n"] == 3 and out["retention/all/kept"] == pytest.approx(2 / 3)


def test_fused_equal_to_vis_is_the_mirror_case():
    ir, vi, inst, _, seen = hand_made_scene()
    out = retention(vi, ir, vi, instances=inst[None], visibility=[seen])
    assert out["retention/vis_only/mean"] == 1.0 and out["retention/vis_only/kept"] == 1.0
    assert out["retention/ir_only/mean"] == 0.0 and out["retention/ir_only/kept"] == 0.0
    assert out["retention/both/mean"] == pytest.approx(60 / 80)  # VIS contrast over the larger IR one
    assert out["retention/both/kept"] == 1.0


def test_max_fusion_keeps_both_and_mean_fusion_halves_them():
    ir, vi, inst, _, seen = hand_made_scene()
    out = retention(torch.maximum(ir, vi), ir, vi, instances=inst[None], visibility=[seen])
    assert out["retention/ir_only/kept"] == 1.0
    assert out["retention/vis_only/mean"] == 0.0  # the dark sign vanishes under max: a known weakness
    out = retention((ir + vi) / 2, ir, vi, instances=inst[None], visibility=[seen])
    assert out["retention/ir_only/mean"] == pytest.approx(0.5) and out["retention/vis_only/mean"] == pytest.approx(0.5)
    assert out["retention/ir_only/kept"] == 1.0  # exactly at the threshold counts as kept
    assert KEEP_THRESHOLD == 0.5


def test_polarity_inversion_keeps_contrast_and_the_mean_is_capped():
    ir, vi, inst, _, seen = hand_made_scene()
    out = retention(255 - ir, ir, vi, instances=inst[None], visibility=[seen])
    assert out["retention/ir_only/mean"] == 1.0  # contrast is a magnitude, not a sign
    boosted = BG + 3 * (ir - BG)  # three times the IR contrast
    out = retention(boosted, ir, vi, instances=inst[None], visibility=[seen])
    assert out["retention/ir_only/mean"] == 2.0 and out["retention/ir_only/kept"] == 1.0


def test_boxes_stand_in_for_masks_and_the_box_includes_background():
    ir, vi, inst, boxes, seen = hand_made_scene()
    H, W = ir.shape
    c_mask = object_contrasts([ir, vi], instances=inst)
    c_box = object_contrasts([ir, vi], boxes=torch.tensor(boxes))
    assert torch.allclose(c_mask[:, 1:], c_box[:, 1:])  # rectangular objects: the same regions
    assert c_mask[0, 0] == pytest.approx(100.0) and c_box[0, 0] < 100.0  # the disc's box holds background
    out = retention(ir, ir, vi, boxes=batch_boxes(boxes, H, W), visibility=[seen])
    assert out["retention/ir_only/kept"] == 1.0 and out["retention/vis_only/kept"] == 0.0


def test_unknown_visibility_reports_the_all_row_only():
    ir, vi, inst, boxes, _ = hand_made_scene()
    out = retention(ir, ir, vi, boxes=batch_boxes(boxes, *ir.shape))
    assert set(out) == {"retention/all/mean", "retention/all/kept", "retention/all/n", "retention/all/excluded"}
    assert out["retention/all/n"] == 3  # reference = the larger contrast for every object
    assert out["retention/all/mean"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)


def test_the_surround_excludes_other_objects():
    ir = torch.full((40, 40), BG, dtype=torch.float64)
    inst = torch.zeros(40, 40, dtype=torch.int32)
    ir[10:20, 10:20], inst[10:20, 10:20] = 150.0, 1
    ir[10:20, 20:30], inst[10:20, 20:30] = 250.0, 2  # a bright neighbour touching object 1
    c = object_contrasts([ir], instances=inst)
    assert c[0].tolist() == [50.0, 150.0]


def test_edge_cases_are_excluded_and_counted():
    H, W = 32, 32
    ir = torch.full((H, W), BG, dtype=torch.float64)
    vi = ir.clone()
    inst = torch.zeros(H, W, dtype=torch.int32)
    inst[2:8, 2:8] = 1
    ir[2:8, 2:8] = BG + MIN_SOURCE_CONTRAST / 2  # faint in both: nothing to keep
    inst[0:6, 20:32] = 3  # at the image corner: the ring is clipped, still scored
    vi[0:6, 20:32] = 10.0
    # id 2 has no pixel (e.g. cropped away); id 4 is listed in the scene but absent too
    seen = [BOTH, IR_ONLY, VIS_ONLY, IR_ONLY]
    out = retention(ir, ir, vi, instances=inst[None], visibility=[seen])
    assert out["retention/all/n"] == 1 and out["retention/all/excluded"] == 3
    assert out["retention/vis_only/mean"] == 0.0 and out["retention/vis_only/n"] == 1
    assert out["retention/ir_only/n"] == 0 and math.isnan(out["retention/ir_only/mean"])
    full = torch.ones(H, W, dtype=torch.int32)  # an object filling the frame has no surround
    assert torch.isnan(object_contrasts([ir], instances=full)).all()
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics' note
        empty = ContrastRetention().compute()  # nothing seen: NaN means, zero counts, no crash
    assert empty["retention/all/n"] == 0 and math.isnan(empty["retention/all/mean"])


def test_batches_accumulate_and_bad_inputs_are_clear_errors():
    ir, vi, inst, boxes, seen = hand_made_scene()
    m = ContrastRetention()
    imgs = [t[None].repeat(2, 1, 1) for t in (ir, ir, vi)]
    m.update(*imgs, instances=inst[None, None].repeat(2, 1, 1, 1), visibility=[seen, seen])
    m.update(*(t[:1] for t in imgs), instances=[None], boxes=batch_boxes(boxes, *ir.shape), visibility=[seen])
    out = m.compute()
    assert out["retention/all/n"] == 9 and out["retention/ir_only/n"] == 3
    # RGB images in 0..1 go through the metrics' gray conversion
    rgb = (ir / 255.0).float()[None, None].repeat(1, 3, 1, 1)
    m2 = ContrastRetention()
    m2.update(rgb, rgb, (vi / 255.0).float()[None, None], instances=inst[None], visibility=[seen])
    assert m2.compute()["retention/ir_only/mean"] == 1.0
    with pytest.raises(DataError, match="neither"):
        ContrastRetention().update(ir[None], ir[None], vi[None])
    with pytest.raises(DataError, match="3 boxes but visibility for 2"):
        ContrastRetention().update(ir[None], ir[None], vi[None], boxes=batch_boxes(boxes, *ir.shape),
                                   visibility=[seen[:2]])


def test_on_generated_scenes_a_copy_of_ir_keeps_what_ir_sees():
    """The generator's own `visible_in` agrees with the metric: IR kept, VIS-only mostly lost."""
    from fusionlab.data import synth
    from fusionlab.metrics.gray import to_gray255

    m = ContrastRetention()
    for i in range(12):
        r = synth.render(np.random.default_rng([21, i]), (160, 128))
        ir, vi = to_gray255(r["ir"]), to_gray255(r["vi"])
        m.update(ir, ir, vi, instances=torch.from_numpy(r["instance"].astype(np.int32))[None],
                 visibility=[[o["visible_in"] for o in r["scene"]["objects"]]])
    out = m.compute()
    assert out["retention/ir_only/n"] >= 10 and out["retention/vis_only/n"] >= 3
    assert out["retention/ir_only/kept"] == 1.0
    assert out["retention/vis_only/kept"] <= 0.35, out


# --------------------------------------------------------------------------- detection recall


def test_split_recall_of_a_detector_that_sees_only_ir():
    targets = [torch.tensor([[0, 10, 10, 20, 30], [3, 40, 10, 50, 20], [1, 60, 30, 90, 50]], dtype=torch.float64)]
    preds = [torch.tensor([[10, 10, 20, 30, 0.9, 0], [61, 30, 90, 51, 0.8, 1]], dtype=torch.float64)]
    out = split_recall(preds, targets, [[IR_ONLY, VIS_ONLY, BOTH]])
    assert out["ir_only"] == {"recall": 1.0, "found": 1, "n": 1}
    assert out["vis_only"] == {"recall": 0.0, "found": 0, "n": 1}
    assert out["both"]["recall"] == 1.0 and out["all"]["recall"] == pytest.approx(2 / 3)


def test_split_recall_matching_rules():
    target = torch.tensor([[0, 0, 0, 10, 10], [0, 0, 0, 10, 10]], dtype=torch.float64)  # two identical boxes
    one = torch.tensor([[0, 0, 10, 10, 0.9, 0]], dtype=torch.float64)
    assert match_targets(one, target).tolist() == [True, False]  # one prediction claims one target
    wrong_class = torch.tensor([[0, 0, 10, 10, 0.9, 1]], dtype=torch.float64)
    assert not match_targets(wrong_class, target).any()
    shifted = torch.tensor([[0, 0, 10, 4, 0.9, 0]], dtype=torch.float64)  # IoU 0.4
    assert not match_targets(shifted, target[:1]).any()
    faint = [torch.tensor([[0, 0, 10, 10, 0.1, 0]], dtype=torch.float64)]
    assert split_recall(faint, [target[:1]], [None])["all"]["recall"] == 0.0  # below conf 0.25
    assert split_recall(faint, [target[:1]], [None], conf=0.0)["all"]["recall"] == 1.0
    out = split_recall([torch.zeros(0, 6)], [target[:1]], [None])
    assert set(out) == {"all"}  # unknown visibility: the all-objects row only
    nobody = split_recall([torch.zeros(0, 6)], [torch.zeros(0, 5)], [[]])
    assert nobody["ir_only"]["n"] == 0 and math.isnan(nobody["ir_only"]["recall"])
    with pytest.raises(DataError, match="pair up"):
        split_recall([one], [target, target], [None, None])
    with pytest.raises(DataError, match="2 targets but visibility for 1"):
        split_recall([one], [target], [[IR_ONLY]])
    assert group_of({"ir": False, "vi": False}) == "neither" and group_of(None) is None
