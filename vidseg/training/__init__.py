"""Training utilities: the losses of S2S++ / HS2S (balanced BCE, border classification, their
lambda combination) and of RVOS (soft IoU with Hungarian matching).

Import the pieces you need from the submodules, e.g.::

    from vidseg.models.losses import segmentation_loss, hungarian_soft_iou
"""
