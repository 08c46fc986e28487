"""Ports: is one free, pick a free one, and who holds one."""

from __future__ import annotations

import errno
import socket
from typing import Optional

from ..endpoint import LOOPBACK, connect_host
from ..utils import UserError


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_host(host: str) -> str:
    return (host if host not in ("", "localhost") else LOOPBACK).strip("[]")


def bind_error(host: str, port: int) -> Optional[OSError]:
    """Why a server could not listen on host:port right now (None: it could)."""
    bind_host = _bind_host(host)
    try:
        infos = socket.getaddrinfo(bind_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return exc
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            return exc
    return None


def port_in_use(host: str, port: int) -> bool:
    exc = bind_error(host, port)
    return exc is not None and exc.errno == errno.EADDRINUSE


def check_bindable(host: str, port: int) -> None:
    """Say what a bind error is: only a port in use says "in use" (with who holds it)."""
    exc = bind_error(host, port)
    if exc is None:
        return
    if isinstance(exc, socket.gaierror):
        raise UserError(f"cannot resolve --host '{host}' ({exc.strerror or exc}); give an address such as 127.0.0.1")
    if exc.errno == errno.EADDRINUSE:
        holder = who_listens(port)
        who = f" by {holder}" if holder else ""
        raise UserError(f"port {port} is already in use{who}; choose another with --port")
    if exc.errno == errno.EADDRNOTAVAIL:
        raise UserError(f"address {host} is not available on this machine (--host); use 127.0.0.1 or a local address")
    if exc.errno == errno.EACCES:
        raise UserError(f"permission denied to listen on {host}:{port} (ports below 1024 need privileges); use --port")
    if exc.errno == errno.EAFNOSUPPORT:
        raise UserError(f"--host {host}: this machine does not support that address family (IPv6 disabled?)")
    raise UserError(f"cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}")


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now (the OS picks it)."""
    addr = connect_host(host)
    with socket.socket(_family(addr), socket.SOCK_STREAM) as sock:
        sock.bind((addr, 0))
        return int(sock.getsockname()[1])


def who_listens(port: int) -> Optional[str]:
    """'pid 123 (llama-server)' for the process listening on `port`, when the OS lets us see it."""
    import psutil

    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            return f"pid {conn.pid} ({name})"
    return None
