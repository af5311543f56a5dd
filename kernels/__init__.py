"""The simulated IPU: device models, Cython codelets, the BSP engine and its cycle model. No TensorFlow."""
from .device import DEVICES, DeviceModel, get_device  # noqa: F401
from .engine import Engine, Profile  # noqa: F401
from .executable import Executable, HostTensor, MemoryReport  # noqa: F401
