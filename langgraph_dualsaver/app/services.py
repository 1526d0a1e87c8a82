"""A small, deterministic billing and account service shipped with the app.

It stands in for the real systems a support agent would call (a payments API, an
identity provider). The data is fixed, so every run of the workflow ends the same way:

========== ======================================================= ======================
customer   what the fixture holds                                  expected outcome
========== ======================================================= ======================
cus_8842   txn_100 + txn_101, both $49.99 on 2026-05-28; failed    refund approved
           logins, account not locked                              automatically, reset
cus_6500   txn_200 + txn_201, both $650.00 on 2026-05-28; failed   human review (over
           logins, account not locked                              the $500 limit)
cus_7301   one $49.99 charge; account locked                       human review (locked)
cus_5120   one $49.99 charge; account fine                         nothing to refund
========== ======================================================= ======================
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from langgraph_dualsaver.app.state import AccountResult, BillingResult, Charge

__all__ = [
    "AUTO_REFUND_LIMIT",
    "CASE_ID",
    "CURRENCY",
    "CUSTOMERS",
    "LARGE_DUPLICATE_CUSTOMER",
    "LOCKED_CUSTOMER",
    "NO_ISSUE_CUSTOMER",
    "REQUEST_TEXT",
    "SEED_CUSTOMER",
    "AccountService",
    "AccountStatus",
    "BillingService",
    "SupportServices",
    "UnknownCustomerError",
]

CASE_ID = "case_8842"
REQUEST_TEXT = "I was charged twice, and I still can't log in."
AUTO_REFUND_LIMIT = 500.00
CURRENCY = "USD"
"""The currency every charge of the fixture is in."""
"""A duplicate strictly under this many dollars is refunded without a human."""

SEED_CUSTOMER = "cus_8842"
LARGE_DUPLICATE_CUSTOMER = "cus_6500"
LOCKED_CUSTOMER = "cus_7301"
NO_ISSUE_CUSTOMER = "cus_5120"
CUSTOMERS = (SEED_CUSTOMER, LARGE_DUPLICATE_CUSTOMER, LOCKED_CUSTOMER, NO_ISSUE_CUSTOMER)


class UnknownCustomerError(LookupError):
    """The services hold no record of this customer."""


def _charge(txn: str, amount: float, date: str, description: str) -> Charge:
    return Charge(transaction_id=txn, amount=amount, date=date, description=description)


_CHARGES: dict[str, list[Charge]] = {
    SEED_CUSTOMER: [
        _charge("txn_099", 49.99, "2026-04-28", "Pro plan, monthly"),
        _charge("txn_100", 49.99, "2026-05-28", "Pro plan, monthly"),
        _charge("txn_101", 49.99, "2026-05-28", "Pro plan, monthly"),
    ],
    LARGE_DUPLICATE_CUSTOMER: [
        _charge("txn_200", 650.00, "2026-05-28", "Team plan, annual"),
        _charge("txn_201", 650.00, "2026-05-28", "Team plan, annual"),
    ],
    LOCKED_CUSTOMER: [_charge("txn_300", 49.99, "2026-05-28", "Pro plan, monthly")],
    NO_ISSUE_CUSTOMER: [_charge("txn_400", 49.99, "2026-05-28", "Pro plan, monthly")],
}


@dataclass(frozen=True)
class AccountStatus:
    """What the identity provider knows about a login."""

    failed_logins: int
    locked: bool


_ACCOUNTS: dict[str, AccountStatus] = {
    SEED_CUSTOMER: AccountStatus(failed_logins=5, locked=False),
    LARGE_DUPLICATE_CUSTOMER: AccountStatus(failed_logins=3, locked=False),
    LOCKED_CUSTOMER: AccountStatus(failed_logins=12, locked=True),
    NO_ISSUE_CUSTOMER: AccountStatus(failed_logins=0, locked=False),
}


@dataclass
class BillingService:
    """Charges per customer, and the duplicate check a billing agent would run."""

    charges_by_customer: dict[str, list[Charge]] = field(
        default_factory=lambda: {k: list(v) for k, v in _CHARGES.items()}
    )

    def charges(self, customer_id: str) -> list[Charge]:
        try:
            return [Charge(**c) for c in self.charges_by_customer[customer_id]]
        except KeyError:
            raise UnknownCustomerError(f"no billing record for customer {customer_id!r}") from None

    def review(self, customer_id: str) -> BillingResult:
        """Find charges with the same amount, date and description: all but the first
        of each such group are duplicates."""
        charges = self.charges(customer_id)
        groups: dict[tuple[float, str, str], list[Charge]] = defaultdict(list)
        for charge in charges:
            groups[(charge["amount"], charge["date"], charge["description"])].append(charge)
        duplicated = [group for group in groups.values() if len(group) > 1]
        amount = sum(c["amount"] for group in duplicated for c in group[1:])
        return BillingResult(
            duplicate_detected=bool(duplicated),
            duplicate_amount=round(amount, 2),
            transaction_ids=[c["transaction_id"] for group in duplicated for c in group],
            charges=charges,
            refund_eligible=bool(duplicated),
            currency=CURRENCY,
        )


@dataclass
class AccountService:
    """Login status per customer, and the fix an account agent would apply."""

    accounts: dict[str, AccountStatus] = field(default_factory=lambda: dict(_ACCOUNTS))

    def status(self, customer_id: str) -> AccountStatus:
        try:
            return self.accounts[customer_id]
        except KeyError:
            raise UnknownCustomerError(f"no account for customer {customer_id!r}") from None

    def review(self, customer_id: str) -> AccountResult:
        """Failed logins on an open account get a password reset; a locked account
        needs a human to unlock it, so no reset is sent."""
        status = self.status(customer_id)
        issue = status.locked or status.failed_logins > 0
        return AccountResult(
            issue_found=issue,
            reset_sent=issue and not status.locked,
            account_locked=status.locked,
        )


@dataclass
class SupportServices:
    """The systems the nodes call; pass your own to ``build_graph`` to change the data."""

    billing: BillingService = field(default_factory=BillingService)
    accounts: AccountService = field(default_factory=AccountService)

    def knows(self, customer_id: str) -> bool:
        return (
            customer_id in self.billing.charges_by_customer
            and customer_id in self.accounts.accounts
        )
