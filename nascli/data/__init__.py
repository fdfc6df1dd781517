"""Datasets: COCO json as the one interchange format; VOC and synthetic data convert into it."""
