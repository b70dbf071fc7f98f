# certbridge: documentation shared by the modules that talk to the ACME CA.
"""The CA's directory option of acme_request, acme_finalize and acme_group, documented once
(its default, Let's Encrypt's production URL, is the modules' own: certbridge-acme's
LE_PRODUCTION)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  directory:
    description:
      - The ACME directory URL. The exact spelling is recorded; any change reissues (except a
        move to a staging directory, see O(staging)).
    type: str
    default: https://acme-v02.api.letsencrypt.org/directory
"""
