"""Pretrained backbones with shipped weights: the perceptual features of L_CNT and the metrics, and the dlib face ResNet."""
