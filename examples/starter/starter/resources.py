from pyramid.authorization import Allow


class AdminResource:
    """The context of the admin pages: only administrators may view them."""

    __acl__ = [(Allow, "role:admin", "admin")]

    def __init__(self, request):
        self.request = request
