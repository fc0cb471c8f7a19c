from pyramid.authentication import AuthTktCookieHelper
from pyramid.authorization import ACLHelper, Authenticated, Everyone

from . import models


class MySecurityPolicy:
    """An auth ticket cookie names the user, who is loaded from the database.

    The query runs wherever Pyramid calls the policy: in the request
    greenlet, where it waits on the event loop through the async driver.
    """

    def __init__(self, secret):
        self.authtkt = AuthTktCookieHelper(secret)
        self.acl = ACLHelper()

    def identity(self, request):
        identity = self.authtkt.identify(request)
        if identity is None:
            return None
        return request.dbsession.get(models.User, int(identity["userid"]))

    def authenticated_userid(self, request):
        user = request.identity
        return None if user is None else user.id

    def permits(self, request, context, permission):
        principals = [Everyone]
        user = request.identity
        if user is not None:
            principals += [Authenticated, f"u:{user.id}", f"role:{user.role}"]
        return self.acl.permits(context, principals, permission)

    def remember(self, request, userid, **kw):
        return self.authtkt.remember(request, userid, **kw)

    def forget(self, request, **kw):
        return self.authtkt.forget(request, **kw)


def includeme(config):
    settings = config.get_settings()
    config.set_security_policy(MySecurityPolicy(settings["auth.secret"]))
