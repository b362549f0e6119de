"""Normalisation layers beyond batch and layer norm: RMSNorm, group norm, instance norm and the
channel-wise layer norm of NCHW tensors (ConvNeXt's)."""

from __future__ import annotations
