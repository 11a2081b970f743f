"""The JSON document both PyTorch benchmarks write (the record format `memopt bench` writes too)."""
import datetime
import json

import torch


def write(path, suite, records):
    doc = dict(tool="pytorch", suite=suite, device=torch.cuda.get_device_name(), torch=torch.__version__,
               utc=datetime.datetime.now(datetime.timezone.utc).isoformat(), results=records)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"wrote {len(records)} records to {path}")
