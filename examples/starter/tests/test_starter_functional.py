import asyncio

import httpx
import pytest

from aiopyramid_ng.asgi import make_asgi_app

CLIENTS = ["testapp", "asgi_testapp"]


@pytest.fixture(params=CLIENTS)
def client(request):
    return request.getfixturevalue(request.param)


def login(client, name="admin", password="admin", status=303):
    return client.post(
        "/login", {"name": name, "password": password, "next": "/admin"}, status=status
    )


def test_root(client):
    res = client.get("/", status=200)
    assert b"Pyramid" in res.body
    assert b"Model <strong>one</strong> has value 1." in res.body


def test_notfound(client):
    res = client.get("/badurl", status=404)
    assert res.status_code == 404


def test_admin_needs_a_login(client):
    res = client.get("/admin", status=303)
    assert res.location.startswith("http://example.com/login?next=")


def test_bad_login(client):
    res = login(client, password="wrong", status=400)
    assert b"Failed login" in res.body


def test_login_then_admin_then_logout(client):
    res = login(client)
    assert res.location == "http://example.com/admin"
    res = client.get("/admin", status=200)
    assert b"admin (admin)" in res.body
    assert b"Signed in as admin" in res.body
    client.get("/logout", status=303)
    client.get("/admin", status=303)


async def _many(asgi, count):
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://example.com") as http:
        # The client keeps the auth ticket cookie for the requests that follow.
        await http.post("/login", data={"name": "admin", "password": "admin", "next": "/admin"})
        pages = [http.get("/") for _ in range(count)]
        admin = [http.get("/admin") for _ in range(count)]
        return await asyncio.gather(*pages), await asyncio.gather(*admin)


def test_interleaved_requests(app):
    """Many requests at once on one event loop: every query waits there, no thread."""
    asgi = make_asgi_app(app)

    async def run():
        try:
            return await _many(asgi, 40)
        finally:
            await app.registry["dbengine"].dispose()

    pages, admin = asyncio.run(run())
    assert all(b"has value 1" in page.content for page in pages)
    assert all(b"admin (admin)" in page.content for page in admin)
