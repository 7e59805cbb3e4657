"""From a communication map to least-privilege NetworkPolicies, proven against the map.

mapparse: YAML -> CommMap (model), with file/line errors; policies: CommMap -> policy
objects; proof: do the objects allow exactly the map?; script: connectivity-tests.sh;
render: files and streams. All pure; only webhook/commands/generate.py does I/O.
"""
from webhook.generate.mapparse import MapError, parse_map  # noqa: F401
from webhook.generate.policies import GeneratedPolicy, generate  # noqa: F401
from webhook.generate.proof import ProofReport, prove  # noqa: F401
