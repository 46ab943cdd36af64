"""shmpubsub: one-publisher, many-subscriber messaging between processes through POSIX shared memory.

import shmpubsub as sps
with sps.Publisher("prices", slots=1024, slot_size=4096) as pub:
    pub.publish(b"...")
with sps.Subscriber("prices") as sub:
    msg = sub.try_receive()
"""

from .errors import (
    ClosedError,
    InvalidArgument,
    InvalidSegment,
    InvalidType,
    LoanError,
    MessageOverwritten,
    MessageTooLarge,
    MissingDependency,
    NoSpace,
    NotAnArray,
    NotFileBacked,
    PermissionDenied,
    PublisherGone,
    ReadOnlySegment,
    ReceiveTimeout,
    SegmentError,
    ShmPubSubError,
    TooManyOpenFiles,
    TooManySubscribers,
    TopicExists,
    TopicNotFound,
)
from .message import Batch, Message
from .names import PREFIX
from .publisher import Loan, Publisher
from .records import HeaderInfo, Recovery, SubscriberInfo
from .segment import Segment
from .subscriber import Subscriber, View

__version__ = "0.1.0"

__all__ = [
    "PREFIX",
    "Batch",
    "ClosedError",
    "HeaderInfo",
    "InvalidArgument",
    "InvalidSegment",
    "InvalidType",
    "Loan",
    "LoanError",
    "Message",
    "MessageOverwritten",
    "MessageTooLarge",
    "MissingDependency",
    "NoSpace",
    "NotAnArray",
    "NotFileBacked",
    "PermissionDenied",
    "Publisher",
    "PublisherGone",
    "ReadOnlySegment",
    "ReceiveTimeout",
    "Recovery",
    "Segment",
    "SegmentError",
    "ShmPubSubError",
    "Subscriber",
    "SubscriberInfo",
    "TooManyOpenFiles",
    "TooManySubscribers",
    "TopicExists",
    "TopicNotFound",
    "View",
    "__version__",
]
