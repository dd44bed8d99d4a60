"""lonewatch wire contract: topics, message types, validation, SIA DC-09 framing.

Pure code only: no sockets, no paho, no redis. Both the device and the relay import it.
"""
