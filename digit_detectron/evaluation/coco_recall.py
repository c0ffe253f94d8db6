"""COCOEvaluator that also reports COCO's average recall."""

from detectron2.evaluation import COCOEvaluator

# Indices 6..11 of pycocotools' COCOeval.stats.
AR_METRICS = ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class COCOEvaluatorWithRecall(COCOEvaluator):
    """detectron2's COCOEvaluator; the results also hold AR1/AR10/AR100/ARs/ARm/ARl (percent)."""

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        for i, name in enumerate(AR_METRICS, start=6):
            stat = None if coco_eval is None else coco_eval.stats[i]
            results[name] = float(stat * 100) if stat is not None and stat >= 0 else float("nan")
        return results
