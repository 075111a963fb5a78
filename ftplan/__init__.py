"""ftplan: plan, price and run LLM fine-tuning jobs.

The real code lives in the subpackages (`ftplan.sizing`, `ftplan.launcher`, ...), each mapped
from a top-level folder of the repository.
"""

__version__ = "0.1.0"
