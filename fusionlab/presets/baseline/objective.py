"""`baseline` objective: intensity + gradient + SSIM against both (contrast-stretched) sources."""

from __future__ import annotations

from fusionlab.config import Section
from fusionlab.presets.objective import Objective


class BaselineLoss(Section):
    w_int: float = 1.0
    w_grad: float = 1.0
    w_ssim: float = 1.0


class BaselineObjective(Objective):
    loss_class = BaselineLoss

    def __init__(self, cfg, net):
        super().__init__(cfg, net)
        from fusionlab.losses import ContentLoss

        # targets stretched exactly as the net stretches its input (model.stretch; 0 = off)
        self.content = ContentLoss(self.lc.w_int, self.lc.w_grad, self.lc.w_ssim, stretch=net.stretch)

    def forward(self, fused, batch, text):
        total, parts = self.content(fused, batch["ir"], self.luma(batch["vi"]))
        return {"total": total, **parts}
