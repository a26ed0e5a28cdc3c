"""Stage 5's method: Text2Pixels' bilevel fusion + detection, and the field's detection protocol.

- `hypergrad`: the bilevel problem's hypergradient (first-order, unrolled, implicit).
- `bilevel`: the LightningModule that trains the fusion net (lower level) and a YOLO (upper level).
- `objective`: the lower level's loss, the fusion net's own stage-4 objective.
- `protocol`: a fresh ultralytics YOLO per image set and seed (DetectionTrainer/Validator), tables.
"""
