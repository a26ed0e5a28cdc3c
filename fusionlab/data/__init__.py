"""The data layer: image I/O, dataset layouts and their checks, colour handling, synthetic
scenes and the Lightning DataModule. Every stage reads pairs through here, so synthetic and
real data take the same code path.

Modules are imported where used (nothing happens at import time):
`sample` (Sample), `config` (DataConfig), `io` (read/write images), `checks` (pairing and the
CheckReport), `formats` (generic, LLVIP, M3FD, KAIST layouts), `labels` (YOLO, VOC, KAIST
annotations), `datasets` (open_dataset, PairDataset), `collate`, `datamodule`, `colour`, `synth`,
`preview`.
"""
