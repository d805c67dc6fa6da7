"""Datasets: on-disk layouts (DAVIS, YouTube-VOS, a person's own video), clip sampling, augmentation."""
