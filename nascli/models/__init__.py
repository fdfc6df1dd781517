"""Detector parts: backbones, the hand-designed FPN, the FCOS head, losses, the assembled detector."""
