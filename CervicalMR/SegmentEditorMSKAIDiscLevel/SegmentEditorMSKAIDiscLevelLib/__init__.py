from SegmentEditorEffects.AbstractScriptedSegmentEditorEffect import *
from SegmentEditorEffects.AbstractScriptedSegmentEditorLabelEffect import *

from .SegmentEditorEffect import *
