"""Constants shared by every layer (a leaf module: it imports nothing)."""

VOID_ID = 255  # DAVIS "void" label in masks: not scored, not trained on
MAX_OBJECT_ID = 254
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # network precisions, by the name torch gives them
DTYPE_CHOICES = ("auto", *DTYPE_NAMES)  # auto: bfloat16 where the device runs it natively, else float32
SEGMENT_DTYPE_CHOICES = (*DTYPE_CHOICES, "int8")  # int8: the large convolutions (CPU; methods with int8)
