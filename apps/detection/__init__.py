"""The detection app (textbook section 7.3): DETR with Hungarian matching on the emoji scenes.

Example::

    from apps.detection import DetectionApp, DetectionConfig

    app = DetectionApp()
    config = DetectionConfig(image_size=32, image_backbone="8,16", hidden_dim=16, num_heads=2, num_layers=1,
                             intermediate_dim=32, runs_dir="/tmp/runs")
    model = app.build_model(config)       # a tiny random-weight DETR
"""

from apps.detection.app import DetectionApp, DetectionConfig, SetLossDETR, coco_box_ap

__all__ = ["DetectionApp", "DetectionConfig", "SetLossDETR", "coco_box_ap"]
