"""Networks: depth, denoiser, text/CLIP, captioner, detector and fusion/ (imported where used)."""
