"""The runtime never imports torch (or the training code)."""

import subprocess
import sys


def test_runtime_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import maskwatch.cli, maskwatch.pipeline, maskwatch.sources, maskwatch.tracking, "
        "maskwatch.draw\n"
        "import maskwatch.models.detector, maskwatch.models.mask_classifier, "
        "maskwatch.models.embedder\n"
        "import maskwatch.ops.synthmask, maskwatch.recognition\n"
        "from maskwatch.pipeline import Pipeline\n"
        "Pipeline()\n"
        "bad = [m for m in ('torch', 'maskwatch.train', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""
