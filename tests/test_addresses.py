"""part_tf.addresses: reading host:port, and whether anything answers there
or holds a port (on 127.0.0.1 only)."""

import errno
import socket
import time
import unittest

from part_tf import addresses


def _listening(reuse=False):
  """A socket listening on a free port of 127.0.0.1, and the port."""
  s = socket.socket()
  if reuse:  # as gRPC's servers, TensorFlow's among them
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  s.bind(("127.0.0.1", 0))
  s.listen()
  return s, s.getsockname()[1]


class AddressesTest(unittest.TestCase):

  def test_split(self):
    self.assertEqual(addresses.split("127.0.0.1:5000"), ("127.0.0.1", 5000))
    self.assertEqual(addresses.split("grpc://host:5000/"), ("host", 5000))
    self.assertEqual(addresses.split("[::1]:80"), ("::1", 80))
    for bad in ("host", "host:", "grpc://host:x", "h:0", "h:70000", ""):
      with self.subTest(bad=bad), self.assertRaisesRegex(
          ValueError, "is not an address like host:5000"):
        addresses.split(bad)

  def test_answers_only_where_something_listens(self):
    server, port = _listening()
    with server:
      self.assertTrue(addresses.answers(f"127.0.0.1:{port}"))
      self.assertTrue(addresses.wait_until_answers(f"grpc://127.0.0.1:{port}",
                                                   5))
    started = time.monotonic()
    self.assertFalse(addresses.wait_until_answers(f"127.0.0.1:{port}", 0.6))
    self.assertLess(time.monotonic() - started, 5)
    self.assertFalse(addresses.answers(f"127.0.0.1:{port}"))

  def test_port_taken_by_a_listener_on_one_interface(self):
    server, port = _listening()
    with server:
      taken = addresses.port_taken(port)
      self.assertIsInstance(taken, OSError)
      self.assertEqual(taken.errno, errno.EADDRINUSE)
    self.assertIsNone(addresses.port_taken(port))

  def test_connections_closing_on_a_server_port_do_not_take_it(self):
    # What a job restarted on the same ports meets: its last server's
    # connections closing (TIME_WAIT); gRPC's new server listens all the
    # same.
    server, port = _listening(reuse=True)
    with server:
      client = socket.create_connection(("127.0.0.1", port))
      accepted, _ = server.accept()
      accepted.close()  # the server side closes first: TIME_WAIT on `port`
      client.close()
    self.assertIsNone(addresses.port_taken(port))


if __name__ == "__main__":
  unittest.main()
