"""Siamese DETR, UP-DETR and DETReg self-supervised pretraining for Detectron2."""
